"""The hub's background work (a slow consumer's cleanup, a gap's repair): kept, logged, and
cancelled when the hub stops, so that no task outlives it and no failure goes unseen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from typing import Any

__all__ = ["Tasks"]

log = logging.getLogger("wshub.core.hub")


class Tasks:
    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background; a failure is logged, never lost."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._done)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        """The tasks still running (tests look for one by its coroutine's name)."""
        return iter(list(self._running))

    def __len__(self) -> int:
        return len(self._running)

    def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed", exc_info=exc)
