"""One client connection: its bounded outbound queue and the writer that drains it.

This is the only place that writes to a socket. Everyone else calls :meth:`Connection.push`
(a frame for this client alone) or :meth:`Connection.push_frame` (a frame shared by a fan-out),
which never wait: a publisher fanning out to ten thousand subscribers does ten thousand
appends, and a subscriber that stops reading fills only its own queue. When that queue
overflows (in frames or in bytes: ``queue_size`` and ``queue_bytes``), the connection is a slow
consumer and is dropped (4008) instead of holding memory.

Two writers, one contract:

- :class:`AsgiConnection` works under any ASGI server: a writer task per connection awaits
  the server's ``send`` for each frame, which (under uvicorn) waits while the socket's buffer
  is full.
- :class:`DirectConnection` (in :mod:`wshub.transport.direct`) is used when the server offers
  wshub's ``wshub.fast`` extension (``wshub serve`` does): frames are written as pre-built WebSocket
  frame bytes, shared by every subscriber, straight to the transport; what a fan-out queues in
  one event-loop tick is written in one call; no task per connection. While the transport's
  buffer is above its high-water mark the frames wait in the same bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from wshub.core.credentials import Credentials
from wshub.core.permissions import Permissions
from wshub.core.ratelimit import RateLimiter
from wshub.model.config import MIB
from wshub.protocol import CloseCode
from wshub.protocol.wire import SharedFrame

__all__ = ["AsgiConnection", "Connection", "ConnectionFactory", "FastPath", "Socket"]

log = logging.getLogger("wshub.core.connection")

BACKLOG_FACTOR = 4
"""How far past its budget an ASGI connection's queue may grow while its writer is not blocked
on the socket: that backlog is the server's own (a busy CPU), not a slow consumer's."""


class FastPath(Protocol):
    """Direct access to a connection's transport, offered by wshub's uvicorn protocol."""

    def write(self, data: bytes) -> None:
        """Write bytes of complete WebSocket frames; ignored once the connection is closing."""

    def writable(self) -> bool:
        """False while the transport's write buffer is above its high-water mark."""

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` whenever the buffer drains below its low-water mark again."""

    def on_ping(self, allow: Callable[[], bool] | None) -> None:
        """Ask ``allow`` before answering each WebSocket ping: False means no pong."""


class Socket(Protocol):
    """A connection's WebSocket, as the server adapts it (ASGI, or a test double): the only
    thing a :class:`Connection` writes to."""

    @property
    def fast(self) -> FastPath | None:
        """The fast path, when the server offers one for this connection."""

    async def send_text(self, text: str) -> None:
        """Write one text frame; may wait while the peer's buffers are full."""

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame after everything written before it."""

    def drop(self, code: int, reason: str) -> None:
        """Close now without waiting: a close frame on a best-effort basis, and the TCP
        connection dropped if that frame cannot be flushed within the close timeout."""


class ConnectionFactory(Protocol):
    """Builds the connection for a socket, with the writer that suits its transport.

    The hub is given one by whoever composes it: :class:`AsgiConnection` itself works under
    any ASGI server; ``wshub.transport.direct.Writers`` picks the fast path where the server
    offers it. The arguments are :class:`Connection`'s.
    """

    def __call__(
        self,
        session: str,
        user: str,
        socket: Socket,
        queue_size: int,
        on_overflow: Callable[[Connection], None],
        rate: RateLimiter | None = None,
        kind: str = "ws",
        permissions: Permissions | None = None,
        *,
        peer: str = "",
        queue_bytes: int = MIB,
    ) -> Connection: ...


class Connection:
    """A client's session on this node: the state both writers share.

    ``kind`` tells protocol connections (``"ws"``) from plain-text chat ones (``"chat"``),
    which share the node's limits but not its channels.
    """

    __slots__ = (
        "_bytes",
        "_closing",
        "_dropped",
        "_ended",
        "_expiry",
        "_on_overflow",
        "_queue_bytes",
        "_queue_size",
        "_socket",
        "channels",
        "close_code",
        "closed",
        "credentials",
        "kind",
        "opened",
        "peer",
        "permissions",
        "rate",
        "session",
        "user",
    )

    def __init__(
        self,
        session: str,
        user: str,
        socket: Socket,
        queue_size: int,
        on_overflow: Callable[[Connection], None],
        rate: RateLimiter | None = None,
        kind: str = "ws",
        permissions: Permissions | None = None,
        peer: str = "",
        queue_bytes: int = MIB,
    ) -> None:
        self.session = session
        self.user = user
        self.kind = kind
        self.channels: dict[str, None] = {}
        self.rate = rate
        self.permissions = permissions
        """The channels this connection may use; None allows all (open mode)."""
        self.credentials: Credentials | None = None
        """The tokens behind it, when auth is configured: see :mod:`wshub.core.credentials`."""
        self.closed = False
        self.close_code: int | None = None
        self.peer = peer
        """The client's address as the server saw it, for the log."""
        self.opened = time.monotonic()
        self._socket = socket
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._bytes = 0
        """Bytes (characters on the ASGI path) of the frames in the queue."""
        self._on_overflow = on_overflow
        self._closing: tuple[int, str] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._dropped = False
        self._ended = False

    # --- what subclasses provide ----------------------------------------------------------

    def start(self) -> None:
        """Begin writing."""
        raise NotImplementedError

    @property
    def queued(self) -> int:
        raise NotImplementedError

    def push(self, text: str) -> None:
        """Queue a frame for this client alone, without waiting."""
        raise NotImplementedError

    def push_frame(self, frame: SharedFrame) -> None:
        """Queue a frame shared with other clients, without waiting."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Forget whatever is queued and stop writing."""
        raise NotImplementedError

    def _begin_close(self) -> None:
        """Write what is queued, then the close frame."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------

    def expire_at(self, when: float | None) -> None:
        """Close with 4001 at ``when`` (seconds since the Unix epoch): the token's ``exp``;
        None: never. A refreshed token's ``exp`` replaces the one set before.

        One timer per connection, cancelled when the connection ends; nothing polls.
        """
        self._cancel_expiry()
        if when is None or self.closing:
            return
        delay = max(0.0, when - time.time())
        self._expiry = asyncio.get_running_loop().call_later(
            delay, self.close, CloseCode.TOKEN_EXPIRED, "token expired"
        )

    @property
    def closing(self) -> bool:
        """Closed or asked to close: frames from the client are no longer served."""
        return self.closed or self._closing is not None

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close after the frames already queued have been written."""
        if self.closed or self._closing is not None:
            return
        self._closing = (code, reason)
        self.close_code = code
        self._begin_close()

    def drop(self, code: int, reason: str) -> None:
        """Close now, discarding what is queued: for a peer that is not reading.

        Also after a close was handed to the transport: a peer that stopped reading may never
        let that close frame through, so the transport is told to cut it off after the close
        timeout. Once the connection is over (:meth:`stop`), there is nothing left to drop.
        """
        if self._ended or self._dropped:
            return
        self._dropped = True
        if not self.closed:
            self.close_code = code
            self.closed = True
            self._cancel_expiry()
            self._discard()
        self._socket.drop(code, reason)

    async def stop(self) -> None:
        """Release the connection once it is over; safe to call more than once."""
        self.closed = True
        self._ended = True
        self._cancel_expiry()
        if self.credentials is not None:
            self.credentials.close()
        self._discard()
        self._bytes = 0

    def _watch_pings(self) -> None:
        """Make the client's WebSocket pings take tokens from its rate limit too."""
        fast = self._socket.fast
        if fast is not None and self.rate is not None:
            fast.on_ping(self._ping_allowed)

    def _ping_allowed(self) -> bool:
        rate = self.rate
        if rate is None or self.closing:
            return rate is None and not self.closing
        now = time.monotonic()
        if rate.allow(now):
            return True
        if rate.abusive(now):
            self.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded repeatedly")
        return False

    def _overflow(self) -> None:
        log.info(
            "slow consumer %s (%s): more than %d frames or %d bytes queued",
            self.session,
            self.user,
            self._queue_size,
            self._queue_bytes,
        )
        self.drop(CloseCode.SLOW_CONSUMER, "slow consumer")
        self._on_overflow(self)

    def _failed(self, exc: Exception) -> None:
        """This connection's transport raised: cut it off, and let the others carry on."""
        log.warning("connection %s (%s) failed: %r; dropping it", self.session, self.user, exc)
        with contextlib.suppress(Exception):
            self.drop(CloseCode.INTERNAL_ERROR, "internal error")
        self.closed = True


class AsgiConnection(Connection):
    """Writes through the ASGI server's ``send``: a writer task drains the queue."""

    __slots__ = ("_blocked", "_queue", "_wake", "_writer")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._queue: deque[str] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._blocked = False
        """The writer is suspended in ``send``: the peer's socket is not taking data."""

    def start(self) -> None:
        self._watch_pings()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    @property
    def queued(self) -> int:
        return len(self._queue)

    def push(self, text: str) -> None:
        if self.closed or self._closing is not None:
            return
        try:
            queue = self._queue
            size = self._bytes + len(text)
            # A frame onto an empty queue is always taken, or a reply larger than the budget
            # could never be delivered. Past the budget, the connection is a slow consumer
            # only while its writer waits on the socket; otherwise the writer simply has not
            # had the CPU yet (an overloaded node), up to a hard cap that bounds memory.
            if queue and (len(queue) >= self._queue_size or size > self._queue_bytes):
                hard = BACKLOG_FACTOR
                if (
                    self._blocked
                    or len(queue) >= hard * self._queue_size
                    or size > hard * self._queue_bytes
                ):
                    self._overflow()
                    return
            queue.append(text)
            self._bytes = size
            self._wake_writer()
        except Exception as exc:
            self._failed(exc)

    def push_frame(self, frame: SharedFrame) -> None:
        self.push(frame.text)

    def _wake_writer(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    def _begin_close(self) -> None:
        if self._writer is None:  # never started: nothing queued can be flushed
            self.closed = True
            self._socket.drop(*(self._closing or (CloseCode.NORMAL, "")))
        else:
            self._wake_writer()

    def _discard(self) -> None:
        self._queue.clear()
        self._bytes = 0
        writer = self._writer
        if writer is not None and not writer.done() and writer is not asyncio.current_task():
            writer.cancel()

    async def stop(self) -> None:
        await super().stop()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._socket.send_text
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    text = queue.popleft()
                    self._bytes -= len(text)
                    self._blocked = True
                    await send(text)
                    self._blocked = False
                if self._closing is not None:
                    break
                self._wake = loop.create_future()
                await self._wake
            code, reason = self._closing
            self.closed = True
            await self._socket.close(code, reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-write; the reader will notice
            log.debug("writer for %s stopped: %r", self.session, exc)
            self.closed = True
            self._queue.clear()
            self._bytes = 0
