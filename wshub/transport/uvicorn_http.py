"""wshub's uvicorn HTTP protocol: uvicorn's httptools one, plus the limits it lacks.

Every request a node serves, ``/ws`` upgrades and plain routes alike, comes through here first.
uvicorn (0.34 to 0.54) with httptools, its default, does not bound what a client can make it
hold before the application sees a request:

- llhttp leaves header limits to its embedder, and httptools keeps a header line whole until
  it ends, so a 25 MB header is 25 MB of memory; neither counts headers;
- uvicorn's only timeout, keep-alive, starts after a first response: a socket that sends
  nothing, or one byte a second, is held for ever;
- ``limit_concurrency`` answers 503 once a request head is complete, so it cannot bound the
  sockets that never complete one, and those can take every file descriptor.

h11's ``h11_max_incomplete_event_size`` bounds the head's bytes, but answers every limit with
the same 400 and has no timeout either. So this protocol counts a head's bytes *before* the
parser buffers them, checks the request line, each header and their number as they are
parsed, gives each request :attr:`RequestLimits.timeout` seconds to arrive complete, and keeps
at most :attr:`RequestLimits.max_pending` sockets that have not sent a complete request head,
closing the oldest when a new one comes (a real client sends its request as soon as it
connects, so the oldest are usually an attacker's). Each refusal is answered (414, 431, 400,
408) with ``Connection: close``; then the socket stops writing, discards what still comes for
at most :data:`LINGER_SECONDS` and :data:`LINGER_BYTES` (so that a client reads the answer
instead of a reset) and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from wshub.transport.sse import ABORT

__all__ = [
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "LimitedHttpProtocol",
    "RequestLimits",
    "http_protocol",
]

log = logging.getLogger("wshub.http")

LINGER_SECONDS = 1.0
"""How long a refused socket keeps reading (and discarding) before it closes."""

LINGER_BYTES = 65536
"""How much a refused socket discards before it gives up on the client reading its answer
and resets the connection: a client that keeps streaming a refused request is not served."""

_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one HTTP request may be before the application sees it."""

    timeout: float = 10.0
    """Seconds for a request, head and body, to arrive complete; then 408 (or a plain close
    when nothing of it arrived)."""
    max_line: int = 8192
    """Bytes in the request line (414 beyond) and in any one header line (431 beyond): the
    ``websockets`` library's own limit, so that ``/ws`` and plain routes agree."""
    max_head: int = 32768
    """Bytes of the request line and every header together; 431 beyond."""
    max_headers: int = 100
    """Header lines in one request; 431 beyond."""
    max_pending: int = 1000
    """Sockets without a complete request head, at most; also at most half the process's
    file-descriptor limit (:func:`pending_cap`)."""


def pending_cap(max_pending: int) -> int:
    """``max_pending``, lowered to half the soft file-descriptor limit: the other half is for
    the connections and requests that are being served."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_pending
    return max(1, min(max_pending, soft // 2))


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`RequestLimits`; see the module docstring.

    Made per server by :func:`http_protocol`, which gives the class its limits and its own
    register of waiting sockets.
    """

    limits: ClassVar[RequestLimits] = RequestLimits()
    cap: ClassVar[int] = RequestLimits().max_pending
    waiting: ClassVar[dict[LimitedHttpProtocol, None]] = {}
    """Sockets that have not sent a complete request head, oldest first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._headers_seen = 0
        self._tail = b""
        self._partial = False  # some of the current request has arrived
        self._timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        self._refused = False
        self._discarded = 0

    # --- the socket's life ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering after a refusal: the answer is written, the rest discarded
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.abort()
            return
        self._unset_keepalive_if_required()
        self._partial = True
        if not self._in_head:
            self._feed(data)
            return
        room = self.limits.max_head - self._head_bytes
        if len(data) > room and (self._tail + data[:room]).find(_HEAD_END) == -1:
            # Parse only what fits, so that a 414 still tells a long URL from long headers.
            if self._feed(data[:room]):
                self._refuse(431, "request headers too large")
            return
        tail = data[-3:] if len(data) >= 3 else (self._tail + data)[-3:]
        if self._feed(data) and self._in_head:
            self._head_bytes += len(data)
            self._tail = tail

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the request was refused."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            status, message = self._refusal or (400, "invalid HTTP request")
            self._refuse(status, message)
            return False
        return True

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # For a response that must end now (a Server-Sent Events client that stopped
        # reading): closing would wait for the unread bytes to flush, which never happens.
        scope = cast(dict[str, Any], self.scope)
        scope["extensions"] = {ABORT: self._reset}
        self._in_head = True
        self._headers_seen = 0
        self._wait()

    def _reset(self) -> None:
        """Drop the connection with a reset: a plain close of a socket whose peer does not
        read keeps the unsent bytes (and the socket) in the kernel until TCP gives up."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_line:
            self._stop(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_seen += 1
        if self._headers_seen > self.limits.max_headers:
            self._stop(431, "too many request headers")
        if len(name) + len(value) + 4 > self.limits.max_line:
            self._stop(431, "request header line too long")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._tail = b""
        self._stop_waiting()
        if self._should_upgrade() and any(
            name in (b"content-length", b"transfer-encoding") and value.strip() != b"0"
            for name, value in self.headers
        ):
            self._stop(400, "a WebSocket upgrade request carries no body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_timer()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timer()
        self._stop_waiting()
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else uvicorn starts the next request, already parsed
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._partial = False
            self._wait()  # an idle keep-alive socket waits for its next request

    def _stop(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        raise _Refused(message)

    # --- waiting for a request ------------------------------------------------------------

    def _wait(self) -> None:
        waiting = self.waiting
        if self in waiting:
            return
        waiting[self] = None
        if self._timer is None:
            self._timer = self.loop.call_later(self.limits.timeout, self._expire)
        if len(waiting) > self.cap:
            oldest = next(iter(waiting))
            log.debug("%d sockets without a complete request: closing the oldest", len(waiting))
            oldest._expire()

    def _stop_waiting(self) -> None:
        self.waiting.pop(self, None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        """The request did not arrive in time, or room is needed for a newer socket."""
        self._timer = None
        if self._refused or not self._partial or self.transport.is_closing():
            self._stop_waiting()
            self.transport.close()
        elif self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # mid-response: nothing else can be said
        else:
            self._refuse(408, "request not received in time")

    # --- refusing -------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close: at once for writing, after a short linger for reading."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        log.debug("refused a request with %d: %s (%s)", status, message, self.client)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application, if it started, is told so
            cycle.message_event.set()
        body = message.encode() + b"\n"
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
        ]
        transport = self.transport
        transport.write(b"".join(head) + body)
        # A lingering socket still counts as waiting, so that refusals cannot pin sockets.
        self.waiting[self] = None
        self._cancel_timer()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, self._expire)


def http_protocol(limits: RequestLimits) -> type[LimitedHttpProtocol]:
    """A protocol class for one uvicorn server (``Config(http=...)``) with ``limits``."""
    return type(
        "LimitedHttpProtocol",
        (LimitedHttpProtocol,),
        {"limits": limits, "cap": pending_cap(limits.max_pending), "waiting": {}},
    )
