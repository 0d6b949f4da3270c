"""A :class:`~wshub.core.connection.Socket` that writes nothing, and a fast path that counts.

For a connection whose frames go somewhere else (``POST /sse/frame`` takes its reply from
the connection itself) or nowhere (a benchmark that measures the hub's own work alone).
"""

from __future__ import annotations

from collections.abc import Callable

from wshub.core.connection import FastPath

__all__ = ["CountingPath", "NullSocket"]


class NullSocket:
    """Takes every frame and every close, and writes nothing; offers no fast path unless it
    is given one."""

    def __init__(self, fast: FastPath | None = None) -> None:
        self.fast = fast

    async def send_text(self, text: str) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass

    def drop(self, code: int, reason: str) -> None:
        pass


class CountingPath:
    """A fast path whose transport takes every write at once and keeps only its size and the
    last write: so the hub's own work per frame can be measured without a system call."""

    def __init__(self) -> None:
        self.bytes = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.last = data

    def writable(self) -> bool:
        return True

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        pass

    def on_ping(self, allow: Callable[[], bool] | None) -> None:
        pass
