"""Where the client is in each joined channel, and the subscriptions that read from it.

What the client keeps across reconnects is a position per joined channel: the offset and epoch
of the last message it handed out. After a reconnect it joins every channel again with that
position as ``since``, so the server replays what was missed, and it drops any message at or
below the position, so nothing is handed out twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from wshub.client.frames import FrameDict, Gap, Message, Stopped, Unsubscribed, message_of

__all__ = ["END", "Channel", "Channels", "Subscription"]

log = logging.getLogger("wshub.client")

END: Final = object()
"""Put on a subscription's queue when the client stops, to end its iteration."""


@dataclass(slots=True)
class Channel:
    """A joined channel: what to join it again with, and where this client is in it."""

    meta: Any = None
    offset: int | None = None
    epoch: str | None = None
    queues: list[asyncio.Queue[Any]] = field(default_factory=list)
    on_gap: list[Callable[[Gap], object]] = field(default_factory=list)
    resuming: bool = False
    renewing: int = 0
    """Joins sent again with a fresh subscription token, not answered yet: their ``joined``
    moves no position (messages already on their way would look like duplicates)."""
    filling: list[FrameDict] | None = None
    """Live messages held back while what the channel missed is fetched
    (:func:`wshub.client.resume.fill`)."""
    backlog: asyncio.Queue[Any] | None = None
    """A channel the server joined this client to keeps its messages here until the
    application's first :class:`Subscription` of it takes the queue over."""

    def join_frame(self, name: str) -> FrameDict:
        """A ``join`` for this channel, from the last position seen if there is one."""
        frame: FrameDict = {"type": "join", "channel": name}
        if self.meta is not None:
            frame["meta"] = self.meta
        if self.epoch is not None and self.offset is not None:
            frame["since"] = {"offset": self.offset, "epoch": self.epoch}
        return frame

    def renewal_frame(self, name: str, token: str) -> FrameDict:
        """A ``join`` of this channel, already joined, with a fresh subscription token."""
        frame: FrameDict = {"type": "join", "channel": name, "token": token}
        if self.meta is not None:
            frame["meta"] = self.meta
        return frame


class Channels(dict[str, Channel]):
    """The joined channels by name; handles ``joined`` and ``message`` frames from the reader."""

    def on_joined(self, frame: FrameDict) -> None:
        # Called in the reader, before any replayed message that follows the reply is read.
        ch = self.get(frame["channel"])
        if ch is None:
            return
        if ch.renewing:
            ch.renewing -= 1
            return
        resuming, ch.resuming = ch.resuming, False
        if frame["recovered"] or ch.filling is not None:  # the fill decides where it is
            return
        self.moved(frame["channel"], ch, frame["offset"], frame["epoch"], resuming)

    def on_subscribed(self, frame: FrameDict) -> Channel | None:
        """The server joined this client to a channel: a channel new to it is None; one
        already held that missed messages is returned, to fetch them
        (:func:`wshub.client.resume.fill`), with its live messages held back meanwhile."""
        name, offset, epoch = frame["channel"], frame["offset"], frame["epoch"]
        ch = self.get(name)
        if ch is not None:
            if ch.offset is None or ch.epoch is None:
                ch.offset, ch.epoch = offset, epoch
            elif epoch != ch.epoch or offset < ch.offset:
                self.moved(name, ch, offset, epoch, resuming=True)
            elif offset > ch.offset and ch.filling is None:
                ch.filling = []
                return ch
            return None
        backlog: asyncio.Queue[Any] = asyncio.Queue()
        self[name] = Channel(offset=frame["offset"], epoch=frame["epoch"], backlog=backlog)
        self[name].queues.append(backlog)
        return None

    def on_unsubscribed(self, frame: FrameDict) -> Unsubscribed | None:
        """The server took this client out of a channel: its subscriptions end, saying why,
        and it is not joined again after a reconnect."""
        ch = self.pop(frame["channel"], None)
        if ch is None:
            return None
        event = Unsubscribed(frame["channel"], str(frame.get("reason", "server")))
        for queue in ch.queues:
            queue.put_nowait(event)
        return event

    def moved(self, name: str, ch: Channel, offset: int, epoch: str, resuming: bool) -> None:
        last_offset, last_epoch = ch.offset, ch.epoch
        ch.offset, ch.epoch = offset, epoch
        if resuming and last_offset is not None and last_epoch is not None:
            gap = Gap(name, last_offset, last_epoch, offset, epoch)
            log.info("resume refused: %s", gap)
            for queue in ch.queues:
                queue.put_nowait(gap)  # where the gap is in the stream, for refetching
            for callback in list(ch.on_gap):
                callback(gap)

    def on_message(self, frame: FrameDict) -> None:
        ch = self.get(frame["channel"])
        if ch is None:
            return
        if ch.filling is not None:
            ch.filling.append(frame)
            return
        offset, epoch = frame["offset"], frame["epoch"]
        if epoch == ch.epoch and ch.offset is not None and offset <= ch.offset:
            return  # already handed out: a replay overlapping what came live
        ch.offset, ch.epoch = offset, epoch
        message = message_of(frame)
        for queue in ch.queues:
            queue.put_nowait(message)


class _Client(Protocol):
    """What a subscription needs of its client."""

    @property
    def stopped(self) -> Stopped | None: ...

    def join(self, channel: str, *, meta: Any = None) -> Awaitable[FrameDict]: ...

    def history(
        self, channel: str, *, since: tuple[int, str] | None = None, limit: int = 100
    ) -> Awaitable[tuple[str, list[Message]]]: ...


class Subscription:
    """An async iterator of one channel's messages; see :meth:`Client.subscribe`.

    The iteration ends when the client is closed or leaves the channel, and when the server
    took the client out of it (then :attr:`unsubscribed` says why); it raises
    :class:`Stopped` when the server stopped the client (1008, 1009, an expired token and
    no new one, ...).
    """

    def __init__(
        self,
        client: _Client,
        channel: str,
        state: Channel,
        meta: Any,
        on_gap: Callable[[Gap], object] | None,
        joined: bool,
        refetch: bool = False,
    ) -> None:
        self.client = client
        self.channel = channel
        self._state = state
        self._meta = meta
        self._on_gap = on_gap
        self._refetch = refetch
        self._join_pending = not joined
        self._refetched: list[Message] = []
        self.unsubscribed: Unsubscribed | None = None
        """Why the server took the client out of the channel, once it did."""
        if state.backlog is not None:  # what came since the server joined the channel
            self._queue: asyncio.Queue[Any] = state.backlog
            state.backlog = None
        else:
            self._queue = asyncio.Queue()
            state.queues.append(self._queue)
        if on_gap is not None:
            state.on_gap.append(on_gap)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._join_pending:
            self._join_pending = False
            try:
                await self.client.join(self.channel, meta=self._meta)
            except BaseException:
                self.close()
                raise
        while not self._refetched:
            item = await self._queue.get()
            if item is END:
                self.close()
                stopped = self.client.stopped
                if stopped is not None and stopped.code != 1000:
                    raise stopped
                raise StopAsyncIteration
            if isinstance(item, Message):
                return item
            if isinstance(item, Unsubscribed):
                self.unsubscribed = item
                self.close()
                raise StopAsyncIteration
            if isinstance(item, Gap) and self._refetch:
                self._refetched = await self._history_before(item)
        return self._refetched.pop(0)

    async def _history_before(self, gap: Gap) -> list[Message]:
        """What the server still has of the messages the gap skipped: those up to the
        position it joined at (live ones after it are already queued behind the gap)."""
        epoch, messages = await self.client.history(self.channel)
        if epoch != gap.epoch:
            return []
        skipped = [m for m in messages if m.offset <= gap.offset]
        if gap.last_epoch == gap.epoch:
            skipped = [m for m in skipped if m.offset > gap.last_offset]
        return skipped

    def close(self) -> None:
        """Stop receiving; the channel stays joined (``Client.leave`` leaves it)."""
        with contextlib.suppress(ValueError):
            self._state.queues.remove(self._queue)
        if self._on_gap is not None:
            with contextlib.suppress(ValueError):
                self._state.on_gap.remove(self._on_gap)
