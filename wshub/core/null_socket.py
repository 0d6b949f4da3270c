"""A :class:`~wshub.core.connection.Socket` that writes nothing.

For a connection whose frames go somewhere else (``POST /sse/frame`` takes its reply from
the connection itself) or nowhere (a benchmark that measures the hub's own work alone).
"""

from __future__ import annotations

__all__ = ["NullSocket"]


class NullSocket:
    """Takes every frame and every close, and writes nothing; offers no fast path."""

    fast = None

    async def send_text(self, text: str) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass

    def drop(self, code: int, reason: str) -> None:
        pass
