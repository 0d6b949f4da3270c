"""One client connection: its bounded outbound queue and the writer that drains it.

This is the only place that awaits a socket send. Everyone else calls :meth:`Connection.push`,
which never waits: a publisher fanning out to ten thousand subscribers does ten thousand
appends, and a subscriber that stops reading fills only its own queue. When that queue
overflows the connection is a slow consumer and is dropped (4008) instead of holding memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from wshub.protocol import CloseCode
from wshub.ratelimit import RateLimiter

__all__ = ["Connection", "Link"]

log = logging.getLogger("wshub.connection")


class Link(Protocol):
    """The transport under a connection, as the server adapts it (ASGI, or a test double)."""

    async def send_text(self, text: str) -> None:
        """Write one text frame; may wait while the peer's buffers are full."""

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame after everything written before it."""

    def drop(self, code: int, reason: str) -> None:
        """Close now without waiting: a close frame on a best-effort basis, and the TCP
        connection dropped if that frame cannot be flushed within the close timeout."""


class Connection:
    """A client's session on this node.

    ``kind`` tells protocol connections (``"ws"``) from plain-text chat ones (``"chat"``),
    which share the node's limits but not its channels.
    """

    __slots__ = (
        "_closing",
        "_link",
        "_on_overflow",
        "_queue",
        "_queue_size",
        "_wake",
        "_writer",
        "channels",
        "close_code",
        "closed",
        "kind",
        "opened",
        "peer",
        "rate",
        "session",
        "user",
    )

    def __init__(
        self,
        session: str,
        user: str,
        link: Link,
        queue_size: int,
        on_overflow: Callable[[Connection], None],
        rate: RateLimiter | None = None,
        kind: str = "ws",
        peer: str = "",
    ) -> None:
        self.session = session
        self.user = user
        self.kind = kind
        self.channels: dict[str, None] = {}
        self.rate = rate
        self.closed = False
        self.close_code: int | None = None
        self.peer = peer
        """The client's address as the server saw it, for the log."""
        self.opened = time.monotonic()
        self._link = link
        self._queue: deque[str] = deque()
        self._queue_size = queue_size
        self._on_overflow = on_overflow
        self._wake: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing: tuple[int, str] | None = None

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def closing(self) -> bool:
        """Whether a close has been asked for (or the connection is already over)."""
        return self.closed or self._closing is not None

    def push(self, frame: str) -> None:
        """Queue a frame for this client without waiting. Overflow drops the client (4008)."""
        if self.closed or self._closing is not None:
            return
        queue = self._queue
        if len(queue) >= self._queue_size:
            self._overflow()
            return
        queue.append(frame)
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close after the frames already queued have been written."""
        if self.closed or self._closing is not None:
            return
        self._closing = (code, reason)
        self.close_code = code
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)
        if self._writer is None:  # never started: nothing queued can be flushed
            self._finish()
            self._link.drop(code, reason)

    def drop(self, code: int, reason: str) -> None:
        """Close now, discarding what is queued: for a peer that is not reading."""
        if self.closed:
            return
        self.close_code = code
        self._finish()
        self._link.drop(code, reason)

    async def stop(self) -> None:
        """Release the writer once the connection is over; safe to call more than once."""
        self._finish()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _finish(self) -> None:
        self.closed = True
        self._queue.clear()
        writer = self._writer
        if writer is not None and not writer.done() and writer is not asyncio.current_task():
            writer.cancel()

    def _overflow(self) -> None:
        log.info(
            "slow consumer %s (%s): queue of %d overflowed",
            self.session,
            self.user,
            self._queue_size,
        )
        self.drop(CloseCode.SLOW_CONSUMER, "slow consumer")
        self._on_overflow(self)

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._link.send_text
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    await send(queue.popleft())
                if self._closing is not None:
                    break
                self._wake = loop.create_future()
                await self._wake
            code, reason = self._closing
            self.closed = True
            await self._link.close(code, reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-write; the reader will notice
            log.debug("writer for %s stopped: %r", self.session, exc)
            self.closed = True
            self._queue.clear()
