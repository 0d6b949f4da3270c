"""What wshub's own transport needs of a session, and the tasks that end sessions.

A class of its own so that the transport does not import the app
(``wshub.app.routes.Session`` is the one the endpoints open).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["OwnedSession", "spawn"]


class OwnedSession:
    """An open connection's line (:class:`~wshub.core.serving.FrameLine`) and its end."""

    line: Any

    async def end(self, code: int | None) -> None:
        raise NotImplementedError


_ending: set[asyncio.Task[Any]] = set()


def spawn(work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` (a session's end, a wait for room or for an ``auth`` frame) in a task
    kept until it is done; its failure goes to the loop's exception handler."""
    task = asyncio.ensure_future(work)
    _ending.add(task)
    task.add_done_callback(_done)


def _done(task: asyncio.Task[Any]) -> None:
    _ending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        asyncio.get_running_loop().call_exception_handler(
            {"message": "a WebSocket session failed to end", "exception": task.exception()}
        )
