"""wshub's uvicorn WebSocket protocol: uvicorn's own, plus what a hub needs.

uvicorn's ``send`` waits while the transport's write buffer is above its high-water mark, which
keeps a slow reader's memory bounded, but it also means a close frame for that reader waits
forever, and a closing transport waits for a flush that never comes. A hub must be able to
cut such a peer off. This class adds:

- the ASGI extension ``wshub.close_now``: queue a close frame past a full buffer (or, if a
  close was already written, keep it), and abort the TCP connection if the peer has not
  completed the close within the given timeout;
- an abort, not a graceful close, when a keepalive ping goes unanswered: a dead peer will
  never read what is still buffered for it; and after a peer's own close, an abort once the
  close timeout passes with the buffer still full;
- the ASGI extension ``wshub.fast`` (a :class:`wshub.core.connection.FastPath`): write pre-built
  frame bytes straight to the transport and learn when its buffer drains, so that a fan-out
  costs one ``write`` per subscriber instead of an ASGI ``send`` with its encoding, framing
  and task switch. Offered only when no extension (compression) was negotiated, since only
  then are a frame's bytes the same for every recipient. No frame is written once the
  WebSocket is closing, whoever wrote the close frame (uvicorn writes some itself);
- pongs that count: each ping asks the connection's rate limiter, and while the transport is
  full the connection stops reading, so a client that sends pings and never reads cannot
  grow the node;
- a close that arrives: when the parser fails the connection (a frame over the hard cap:
  1009; invalid UTF-8: 1007; a protocol error: 1002), uvicorn closes the socket right after
  the close frame, while the peer may still be sending the rest of its frame. Closing a
  socket with unread data makes the kernel send RST, which can destroy the close frame
  before the peer reads it: the peer sees 1006 and reconnects instead of stopping. So, as RFC
  6455 7.1.1 asks, the close frame is followed by a half-close (FIN), and what the peer still
  sends is read and thrown away until its own FIN, or the close timeout (then an abort);
- refused handshakes that are refused: a request the WebSocket parser rejects (request line
  or header over 8 KiB, more than 128 headers, a body, another method) gets its 4xx response
  and the socket is closed at once, instead of both being left to the peer;
- a denial response (the hub refusing a handshake with 401, 403, 503) that does not make
  uvicorn log "ASGI callable returned without completing handshake" as an error.

Everything else, the standard ASGI path included, is uvicorn's. :mod:`wshub.transport.uvicorn_check`
verifies at start-up that the installed uvicorn has what this class relies on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import SecurityError
from websockets.http11 import Response
from websockets.protocol import State

from wshub.core.ratelimit import MAX_PAUSE

__all__ = ["WshubWebSocketProtocol"]

log = logging.getLogger("wshub.app.server")

_OPEN = State.OPEN  # an enum member looked up once: the class attribute costs on every write
RATE_HOLD = MAX_PAUSE / 2
"""Seconds a peer's reading is held back after a ping over its rate: half the second in which
its bucket pays off a full debt (a burst is one second's worth), so that a flood stays in
debt and still ends in 1008."""
_PONG = b"\x8a"  # FIN + opcode 10: the first byte of every pong websockets writes


class _FastPath:
    """The ``wshub.fast`` extension of one connection."""

    __slots__ = ("_protocol", "callback", "ping_filter")

    def __init__(self, protocol: WshubWebSocketProtocol) -> None:
        self._protocol = protocol
        self.callback: Callable[[], None] | None = None
        self.ping_filter: Callable[[], bool] | None = None

    def write(self, data: bytes) -> None:
        p = self._protocol
        # The sans-I/O protocol's record of its close frame, not uvicorn's close_sent: uvicorn
        # writes a peer's close reply, the shutdown's 1012 and the keepalive's 1011 without
        # setting its own. (websockets' broadcast() checks ``state is OPEN``, which is the same
        # thing for a server, since websockets answers a peer's close at once; the state is a
        # property, and this runs once per connection per tick.)
        if p.conn.close_sent is None and not p.disconnected:
            p.transport.write(data)

    def writable(self) -> bool:
        return self._protocol.writable.is_set()

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback

    def on_ping(self, allow: Callable[[], bool] | None) -> None:
        self.ping_filter = allow


class WshubWebSocketProtocol(WebSocketsSansIOProtocol):
    fast_path: _FastPath | None = None
    _reading_held = False
    """Reading stopped by this class while pongs wait on a full transport."""
    _discarding = False
    _rate_hold: asyncio.TimerHandle | None = None
    """Reading held back after a ping over the rate (see :meth:`handle_ping`)."""
    """The parser failed the connection: what the peer still sends is read and dropped."""

    # --- the handshake ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return  # read, so that the socket closes without unread data (no RST)
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self._refuse_unparsable()

    def _refuse_unparsable(self) -> None:
        """Write the response to a request the parser refused, and close at once."""
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        exc = self.conn.handshake_exc
        assert exc is not None
        status, reason, raw = refusal_response(exc, self.conn.data_to_send())
        log.info(
            "handshake refused",
            extra={"event": "refused", "status": status, "reason": reason, "peer": _peer(self)},
        )
        if not self.transport.is_closing():
            self.transport.write(raw)
            self.transport.close()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            extensions = scope["extensions"]
            extensions["wshub.close_now"] = self.close_now
            if not self.response.headers.get("Sec-WebSocket-Extensions"):
                self.fast_path = extensions["wshub.fast"] = _FastPath(self)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # The denial response is complete: the handshake is over, refused on purpose.
            self.handshake_complete = True

    # --- writing ---------------------------------------------------------------------------

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._reading_held:
            self._reading_held = False
            if not self.read_paused and self._rate_hold is None:
                self.transport.resume_reading()
        fast = self.fast_path
        if fast is not None and fast.callback is not None:
            fast.callback()

    def handle_ping(self) -> None:
        output = self.conn.data_to_send()
        fast = self.fast_path
        allow = fast.ping_filter if fast is not None else None
        if allow is not None:  # one pong per ping in the output; ask for each
            answered = [chunk for chunk in output if chunk[:1] != _PONG or allow()]
            if len(answered) < len(output) and self._rate_hold is None:
                self._hold_for_rate()
            output = answered
        self.transport.write(b"".join(output))
        if not self.writable.is_set() and not self._reading_held:
            # The peer does not read its pongs: read no more pings until it does.
            self._reading_held = True
            self.transport.pause_reading()

    def _hold_for_rate(self) -> None:
        """A ping over the rate: read nothing from this peer for a while. Refusing the pong is
        not enough, since parsing a flood of tiny pings is what costs the node its CPU (and its
        other clients their latency); held, the peer costs at most two reads a second."""
        self.transport.pause_reading()
        self._rate_hold = self.loop.call_later(RATE_HOLD, self._end_rate_hold)

    def _end_rate_hold(self) -> None:
        self._rate_hold = None
        if not (self.read_paused or self._reading_held or self.transport.is_closing()):
            self.transport.resume_reading()

    def _read_again(self) -> None:
        """Drop every hold on reading (uvicorn's, the pongs', the rate's): once a close is under
        way, what the peer sends must be read, or the close cannot complete."""
        if self._rate_hold is not None:
            self._rate_hold.cancel()
            self._rate_hold = None
        elif not (self.read_paused or self._reading_held):
            return
        self.read_paused = self._reading_held = False
        self.transport.resume_reading()

    # --- closing ---------------------------------------------------------------------------

    def close_now(self, code: int, reason: str, timeout: float) -> None:
        if self.disconnected:
            return
        if self.conn.state is _OPEN and not self.transport.is_closing():
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self._read_again()  # the peer's close reply
        # Whoever wrote the close frame, the peer has ``timeout`` to complete the close.
        self._abort_in(timeout)

    def handle_parser_exception(self) -> None:
        """Fail the connection as websockets asks: the close frame, then EOF, then read the
        peer's remaining bytes until its own EOF (``eof_received`` closes the transport)."""
        close = self.conn.close_sent
        assert close is not None  # fail() sent it (or an earlier close did)
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        )
        self.close_sent = self._discarding = True
        transport = self.transport
        # The output is the close frame and b"", websockets' mark for "half-close now".
        transport.write(b"".join(self.conn.data_to_send()))
        if transport.can_write_eof():  # not over TLS: then the timeout ends it
            transport.write_eof()
        self._read_again()
        self._abort_in(self.close_timeout)

    def _abort_in(self, timeout: float) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(timeout, self.transport.abort)

    def handle_close(self, event: Any) -> None:
        super().handle_close(event)
        # A peer that closed and stopped reading would hold a full buffer (and its socket)
        # for good: uvicorn's transport.close() waits for the flush.
        if (
            not self.disconnected
            and self.close_timer is None
            and self.transport.get_write_buffer_size()
        ):
            self._abort_in(self.close_timeout)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self.transport.abort()


def refusal_response(exc: Exception, output: list[bytes]) -> tuple[int, str, bytes]:
    """The status, the reason to log and the bytes to write for a request the parser refused.

    websockets answers a request line or header that is too long with 414 or 431 (its
    response is in ``output``), and anything else it cannot take (a body, another method, a
    malformed line) with no response at all: that gets a plain 400. The reason is the
    parser's for size limits (it names the limit, never the request's content) and generic
    otherwise, since a malformed header line may carry a credential.
    """
    raw = b"".join(output)
    if raw.startswith(b"HTTP/"):
        status = int(raw.split(b" ", 2)[1])
    else:
        status = 400
        body = b"Failed to open a WebSocket connection: not a valid WebSocket request.\n"
        headers = [
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", "text/plain; charset=utf-8"),
        ]
        raw = Response(status, "Bad Request", Headers(headers), body).serialize()
    reason = str(exc) if isinstance(exc, SecurityError) else "not a valid WebSocket request"
    return status, reason, raw


def _peer(protocol: WebSocketsSansIOProtocol) -> str:
    client = protocol.client
    return f"{client[0]}:{client[1]}" if client else ""
