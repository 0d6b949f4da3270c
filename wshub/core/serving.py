"""Serving one connection's frames in order, within a bound, while its transport is still read.

A connection's frames are served one at a time, in the order they arrived, so that its replies
come in that order. They used to be served inside the transport's receive loop, and the ASGI
server stops reading a connection while the application has not taken its last message: a
frame waiting on a slow broker then left the peer's pongs unread, and keepalive closed a live
client. Here the receive loop only puts each frame in the connection's :class:`FrameLine`,
and one task serves the line, so the transport is read while a broker call is pending.

Every frame has a deadline, counted from its arrival (``reply_timeout``). The broker calls
made for it run through :func:`bounded`: one still pending at the deadline is cut off, and
the frame is answered ``timeout`` if the call may have had an effect (the command may have
run), or ``unavailable`` if it cannot have. A frame whose deadline passed while it waited for
its turn is answered ``unavailable`` at its first broker call, which is then never made. So
a stalled broker holds a line for at most one deadline, whatever its length.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

from wshub.brokers.base import BrokerTimeout, BrokerUnavailable

__all__ = [
    "MAX_WAITING",
    "TIMEOUT",
    "FrameLine",
    "after_reply",
    "bounded",
    "deadline_in",
    "within",
]

log = logging.getLogger("wshub.core.serving")

T = TypeVar("T")

MAX_WAITING = 64
"""Frames of one connection that may wait for their turn. Beyond that the receive loop waits
for room: the transport stops being read, as it did for every frame before, but for at most
one deadline, since the frames ahead of it are answered by then."""

TIMEOUT = (
    "the broker did not confirm in time: it may or may not have been done; "
    "retry a publish with the same idempotency_key"
)
"""The message of a ``timeout`` error."""

Serve = Callable[[str | None, float | None], Awaitable[None]]
"""Serves one frame: its text (None for a binary frame) and its deadline (loop time)."""


class FrameLine:
    """One connection's frames waiting to be served, and the task serving them in order.

    The task exists only while frames wait: an idle connection costs no task.
    """

    __slots__ = ("_bound", "_first", "_room", "_serve", "_timeout", "_waiting", "_worker")

    def __init__(self, serve: Serve, timeout: float, bound: int = MAX_WAITING) -> None:
        self._serve = serve
        self._timeout = timeout
        self._bound = bound
        # A list, not a deque: at most ``bound`` long, and an empty deque costs an idle
        # connection 600 bytes.
        self._waiting: list[tuple[str | None, float | None]] = []
        self._worker: asyncio.Task[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._first: Awaitable[None] | None = None

    def open_with(self, work: Awaitable[None]) -> None:
        """Run ``work`` (greeting the client, which may wait on the broker) before any frame,
        in the serving task, so that the connection is read meanwhile."""
        self._first = work
        self._worker = asyncio.get_running_loop().create_task(self._work())

    @property
    def waiting(self) -> int:
        """Frames received and not yet taken up for serving."""
        return len(self._waiting)

    def offer(self, text: str | None) -> bool:
        """Add a frame if the line has room, without waiting; False: it is full (wait in
        :meth:`put`)."""
        if len(self._waiting) >= self._bound:
            return False
        self._waiting.append((text, deadline_in(self._timeout)))
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())
        return True

    async def put(self, text: str | None) -> None:
        """Add a frame (None: a binary one); waits only while the line is full."""
        loop = asyncio.get_running_loop()
        while len(self._waiting) >= self._bound:
            self._room = loop.create_future()
            await self._room
        self._waiting.append((text, deadline_in(self._timeout)))
        if self._worker is None:
            self._worker = loop.create_task(self._work())

    async def finish(self) -> None:
        """Wait until every frame put so far has been served (each within its deadline).

        A client that publishes and closes at once still has its publications made, as when
        frames were served inside the receive loop. Cancelled, it cancels the serving too.
        """
        worker = self._worker
        if worker is None:
            return
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            self._waiting.clear()
            worker.cancel()
            raise

    async def _work(self) -> None:
        waiting = self._waiting
        try:
            first, self._first = self._first, None
            if first is not None:
                await first
            while waiting:
                text, deadline = waiting.pop(0)
                room = self._room
                if room is not None and not room.done():
                    room.set_result(None)
                try:
                    await self._serve(text, deadline)
                except BrokerUnavailable:  # e.g. a chat line: the outage is logged once
                    log.debug("broker unavailable: a frame was not served")
                except Exception:  # one frame's failure must not stop the ones behind it
                    log.exception("failed to serve a frame")
        finally:
            self._worker = None


class FrameBudget:
    """The deadline of the frame being served, and what to do once it is answered."""

    __slots__ = ("deadline", "later")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.later: list[Callable[[], Coroutine[Any, Any, None]]] | None = None


_budget: contextvars.ContextVar[FrameBudget | None] = contextvars.ContextVar(
    "wshub_frame_budget", default=None
)


def deadline_in(timeout: float) -> float | None:
    """The deadline ``timeout`` seconds from now, in event-loop time; None for 0 (no bound)."""
    return asyncio.get_running_loop().time() + timeout if timeout > 0 else None


async def within(deadline: float | None, timeout: float, work: Awaitable[T]) -> T:
    """Await ``work`` (serving one frame) under ``deadline``: its broker calls go through
    :func:`bounded`.

    ``work`` must push the frame's reply. Clean-ups deferred with :func:`after_reply` run
    after it, before the next frame, each with a deadline of its own (``timeout`` from now),
    so that undoing a failed ``join`` never delays its ``error`` reply.
    """
    budget = FrameBudget(deadline)
    token = _budget.set(budget)
    try:
        result = await work
        for cleanup in budget.later or ():
            budget.deadline = deadline_in(timeout)
            try:
                await cleanup()
            except BrokerUnavailable:
                log.debug("broker unavailable during a clean-up after a reply")
        return result
    finally:
        _budget.reset(token)


async def after_reply(cleanup: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``cleanup`` once the current frame is answered; at once outside a frame."""
    budget = _budget.get()
    if budget is None:
        await cleanup()
    elif budget.later is None:
        budget.later = [cleanup]
    else:
        budget.later.append(cleanup)


async def bounded(call: Awaitable[T], *, effect: bool) -> T:
    """Await a broker call made for the frame being served, within that frame's deadline.

    ``effect`` says whether the call changes anything (publish, send, presence): cut off at
    the deadline it raises :class:`BrokerTimeout` (it may have run), otherwise
    :class:`BrokerUnavailable`. A call that the deadline leaves no time for is not made.
    Outside a frame, or with no deadline, the broker's own timeouts bound the call.

    The call's first step runs at once, and a timer is armed only if it has to wait: an
    in-process broker answers within that step, so its calls cost no timer at all.
    """
    budget = _budget.get()
    deadline = None if budget is None else budget.deadline
    try:
        if deadline is None:
            return await call
        if asyncio.get_running_loop().time() >= deadline:
            if isinstance(call, Coroutine):
                call.close()  # never started: nothing was sent
            raise BrokerUnavailable("no time left to reach the broker")
        steps = call.__await__()
        try:
            waiting_on = steps.send(None)
        except StopIteration as done:
            result: T = done.value
            return result
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                rest: T = await _Resumed(steps, waiting_on)
                return rest
        except TimeoutError:
            if not timeout.expired():
                raise
            if effect:
                raise BrokerTimeout("the broker did not confirm in time") from None
            raise BrokerUnavailable("the broker did not answer in time") from None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this task is being cancelled: let it
        # A future inside the broker was cancelled (say, its link reconnected): that is the
        # broker failing this call, not a reason to end the connection.
        if effect:
            raise BrokerTimeout("the broker call was interrupted") from None
        raise BrokerUnavailable("the broker call was interrupted") from None


class _Resumed:
    """The rest of an awaitable whose first step already ran and yielded ``waiting_on``.

    ``await`` on it continues exactly as ``await`` on the original would have (the
    ``yield from`` protocol): results and exceptions, cancellation included, go down to the
    call, and what it waits on goes up to the task.
    """

    __slots__ = ("_steps", "_waiting_on")

    def __init__(self, steps: Generator[Any, Any, Any], waiting_on: Any) -> None:
        self._steps = steps
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        steps, waiting_on = self._steps, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = steps.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting_on = steps.send(sent)
                except StopIteration as done:
                    return done.value
