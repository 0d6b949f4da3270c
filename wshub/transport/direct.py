"""The fast path's writer: pre-built frame bytes straight to the transport, no task per connection.

Used when the server offers wshub's ``wshub.fast`` extension (``wshub serve`` does). What a
fan-out queues for a connection within one event-loop tick is written in one call at the end of
the tick (:class:`Flusher`), or at once after a long burst. The transport's buffer is filled
only up to its high-water mark: past it, frames wait in the connection's own queue, which is
bounded in frames and in bytes, and the rest is written chunk by chunk as the buffer drains.
So a slow reader costs at most its queue budget, one chunk past the high-water mark and the
kernel's socket buffer, whatever its pattern of reading and pausing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wshub.core.connection import AsgiConnection, Connection, FastPath, Socket
from wshub.core.permissions import Permissions
from wshub.core.ratelimit import RateLimiter
from wshub.model.config import MIB
from wshub.protocol.wire import SharedFrame, text_frame

__all__ = ["FLUSH_AT", "FLUSH_BYTES", "DirectConnection", "Flusher", "Writers"]

FLUSH_AT = 64
"""Frames a direct connection queues within one tick before it writes them at once."""

FLUSH_BYTES = 65_536
"""Bytes queued within one tick before they are written at once, and the most written in one
call while draining: so a burst of large frames to a reader that keeps up never counts against
its budget, and a drain never copies the whole queue into the transport at once."""


_BURST = FLUSH_AT - 1  # computed once: this is compared on every push


class Flusher:
    """Writes the frames direct connections queued during one event-loop tick, at its end.

    One callback per tick for all connections, instead of a task per connection: a burst of
    publications reaches each subscriber's socket in one write. One connection whose transport
    fails is cut off; the others are still written.
    """

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[DirectConnection] = []
        self._scheduled = False

    def mark(self, conn: DirectConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            # The common case inline (one write of a small queue to a transport that takes
            # it): at 100,000 deliveries/s each call saved here is a few percent of a core.
            conn._dirty = False
            queue = conn._queue
            try:
                if conn._bytes <= FLUSH_BYTES and conn._closing is None and not conn.closed:
                    if queue and conn._fast.writable():
                        conn._fast.write(queue[0] if len(queue) == 1 else b"".join(queue))
                        queue.clear()
                        conn._bytes = 0
                    continue
                conn.flush()
            except Exception as exc:
                conn._failed(exc)


class DirectConnection(Connection):
    """Writes pre-built frame bytes straight to the transport (the ``wshub.fast`` extension)."""

    __slots__ = ("_dirty", "_fast", "_flusher", "_queue")

    def __init__(self, *args: object, fast: FastPath, flusher: Flusher, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._queue: list[bytes] = []  # a list: cheaper than a deque for append-then-clear
        self._fast = fast
        self._flusher = flusher
        self._dirty = False

    def start(self) -> None:
        self._watch_pings()
        self._fast.on_writable(self.flush)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def push(self, text: str) -> None:
        self._enqueue(text_frame(text.encode()))

    def push_frame(self, frame: SharedFrame) -> None:
        # Called once per delivery: every attribute read and call here is multiplied by the
        # fan-out, so a frame onto an empty queue (nearly every delivery below saturation)
        # is queued and marked for the tick's flush inline.
        queue = self._queue
        if queue or self.closed or self._closing is not None:
            self._enqueue(frame.wire)
            return
        data = frame.wire
        queue.append(data)
        self._bytes = len(data)
        if not self._dirty:
            self._dirty = True
            flusher = self._flusher
            flusher._dirty.append(self)
            if not flusher._scheduled:
                flusher._scheduled = True
                asyncio.get_running_loop().call_soon(flusher._run)

    def _enqueue(self, data: bytes) -> None:
        if self.closed or self._closing is not None:
            return
        try:
            queue = self._queue
            n = len(queue)
            size = self._bytes + len(data)
            # A frame onto an empty queue is always taken, or a reply larger than the budget
            # could never be delivered; behind others, it must fit in the budget.
            if n and (n >= self._queue_size or size > self._queue_bytes):
                self._overflow()
                return
            queue.append(data)
            self._bytes = size
            if (n < _BURST and size < FLUSH_BYTES) or not self._fast.writable():
                if not self._dirty:
                    self._dirty = True
                    self._flusher.mark(self)
            else:
                self.flush()  # a long burst within one tick: do not let it pile up
        except Exception as exc:
            self._failed(exc)

    def flush(self) -> None:
        """Write what is queued while the transport takes it; the rest waits for a drain."""
        self._dirty = False
        if self.closed:
            return
        queue = self._queue
        if queue:
            fast = self._fast
            if not fast.writable():
                return  # resumed by on_writable
            if self._bytes <= FLUSH_BYTES:  # nearly always: one write of everything
                fast.write(queue[0] if len(queue) == 1 else b"".join(queue))
                queue.clear()
                self._bytes = 0
            elif not self._write_chunks():
                return
        if self._closing is not None:
            self.closed = True
            self._fast.on_writable(None)
            task = asyncio.ensure_future(self._socket.close(*self._closing))
            _closing_tasks.add(task)
            task.add_done_callback(_forget)

    def _write_chunks(self) -> bool:
        """Write the queue in chunks of about FLUSH_BYTES for as long as the transport takes
        them, instead of one copy of the whole queue; True if all of it was written."""
        queue = self._queue
        fast = self._fast
        while queue:
            if not fast.writable():
                return False
            end, size = 0, 0
            while end < len(queue) and size < FLUSH_BYTES:
                size += len(queue[end])
                end += 1
            fast.write(queue[0] if end == 1 else b"".join(queue[:end]))
            del queue[:end]
            self._bytes -= size
        self._bytes = 0
        return True

    def _begin_close(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            self._failed(exc)

    def _discard(self) -> None:
        self._queue.clear()
        self._bytes = 0
        self._fast.on_writable(None)


_closing_tasks: set[asyncio.Task[None]] = set()


def _forget(task: asyncio.Task[None]) -> None:
    _closing_tasks.discard(task)
    if not task.cancelled():
        task.exception()  # the peer may be gone already; the reader notices


class Writers:
    """A hub's :class:`~wshub.core.connection.ConnectionFactory`: a :class:`DirectConnection`
    where the server offers the fast path (and ``enabled``), an ASGI one elsewhere. One
    :class:`Flusher` serves every direct connection of the hub."""

    __slots__ = ("_flusher", "enabled")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._flusher = Flusher()

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
    ) -> Connection:
        args = (session, user, socket, queue_size, on_overflow, rate, kind, permissions)
        fast = socket.fast
        if fast is None or not self.enabled:
            return AsgiConnection(*args, peer=peer, queue_bytes=queue_bytes)
        return DirectConnection(
            *args, fast=fast, flusher=self._flusher, peer=peer, queue_bytes=queue_bytes
        )
