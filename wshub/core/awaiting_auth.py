"""Connections waiting for their ``auth`` frame: admitted, upgraded, nobody's yet.

They are not hub connections (nothing is attached for them), so a drain cannot close them as
it closes the others; each waits on its own :class:`asyncio.Event` here instead, set when the
node goes away, so that it closes with 1001 at once rather than lingering until the auth
timeout, and the drain knows when they are all gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["AwaitingAuth"]


class AwaitingAuth:
    """The node's connections before their ``auth`` frame, each with its going-away event."""

    __slots__ = ("_going_away", "_waiting")

    def __init__(self) -> None:
        self._waiting: set[asyncio.Event] = set()
        self._going_away = False

    @contextlib.contextmanager
    def waiting(self) -> Iterator[asyncio.Event]:
        """For as long as one connection waits: its event, set when the node goes away
        (already set if it is going away)."""
        event = asyncio.Event()
        if self._going_away:
            event.set()
        self._waiting.add(event)
        try:
            yield event
        finally:
            self._waiting.discard(event)

    def close_all(self) -> None:
        """The node goes away: every waiting connection, and any that begins waiting now."""
        self._going_away = True
        for event in self._waiting:
            event.set()

    def __len__(self) -> int:
        return len(self._waiting)
