"""The in-memory broker: one process, no network, the embedded default.

Everything happens synchronously inside each coroutine, so offsets are assigned and
publications delivered in one step that no other task can interleave with.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from wshub.brokers.base import BrokerSink, PresentUser
from wshub.model.history import ChannelLogs, Recovery
from wshub.model.presence import PresenceTable
from wshub.model.publication import Publication

__all__ = ["MemoryBroker"]

SWEEP_SECONDS = 60.0


class MemoryBroker:
    """History, presence and delivery for a single node: a :class:`~wshub.brokers.base.Broker`
    and a :class:`~wshub.brokers.base.BrokerOps`.

    A channel's position (offset and epoch) outlives its history by ``keep_position``
    seconds of quiet, so a client that saw the last message can resume after a pause. After
    that, or after a restart, the channel starts a new epoch.
    """

    def __init__(
        self,
        history_size: int = 100,
        history_ttl: float = 300,
        keep_position: float = 3600,
        idempotency_ttl: float = 300,
    ) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.keep_position = max(keep_position, history_ttl)
        self._logs = ChannelLogs(history_size, history_ttl, self.keep_position)
        self.idempotency_ttl = idempotency_ttl
        # (channel, key) -> (offset, epoch, ts, forgotten at): insertion order is expiry
        # order, since every key lives the same TTL, so the sweep stops at the first live one.
        self._keys: dict[tuple[str, str], tuple[int, str, int, float]] = {}
        self._presence = PresenceTable()
        self._subscribed: set[str] = set()
        self._sink: BrokerSink | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stats = b""

    async def start(self, sink: BrokerSink) -> None:
        self._sink = sink
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    @property
    def ready(self) -> bool:
        return True  # in the process itself: nothing to be disconnected from

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        now = time.monotonic()
        if idempotency_key is not None:
            seen = self._keys.get((channel, idempotency_key))
            if seen is not None and seen[3] > now:
                return Publication(channel, seen[0], seen[1], sender, data, seen[2])
        pub = self._logs.append(channel, data, sender, int(time.time() * 1000), now)
        if idempotency_key is not None:
            key = (channel, idempotency_key)
            self._keys.pop(key, None)  # an expired one: re-insert, to keep the expiry order
            self._keys[key] = (pub.offset, pub.epoch, pub.ts, now + self.idempotency_ttl)
        if channel in self._subscribed and self._sink is not None:
            self._sink.deliver(pub)
        return pub

    async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Recovery:
        return self._logs.recover(channel, offset, epoch, time.monotonic())

    async def history(
        self, channel: str, offset: int | None, epoch: str | None, limit: int
    ) -> tuple[str, list[Publication]]:
        return self._logs.page(channel, offset, epoch, limit, time.monotonic())

    async def watch(self, user: str) -> None:
        pass  # one node: every direct message is delivered here anyway

    async def unwatch(self, user: str) -> None:
        pass

    async def emit(self, channel: str, frame: str, exclude_user: str | None = None) -> None:
        if self._sink is not None:
            self._sink.deliver_event(channel, frame, exclude_user)

    async def send(self, user: str, frame: str) -> None:
        if self._sink is not None:
            self._sink.deliver_direct(user, frame)

    async def subscribe_user(self, user: str, channel: str) -> None:
        if self._sink is not None:
            self._sink.deliver_subscribe(user, channel)

    async def unsubscribe_user(self, user: str, channel: str) -> None:
        if self._sink is not None:
            self._sink.deliver_unsubscribe(user, channel)

    async def presence_add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        return self._presence.add(channel, user, session, meta)

    async def presence_remove(self, channel: str, user: str, session: str) -> bytes | None:
        return self._presence.remove(channel, user, session)

    async def presence(self, channel: str) -> list[PresentUser]:
        return [
            PresentUser(m.user, m.meta, len(m.sessions)) for m in self._presence.members(channel)
        ]

    async def channels(self) -> dict[str, int]:
        return {
            name: sum(len(m.sessions) for m in self._presence.members(name))
            for name in self._presence.channels()
        }

    async def kick(self, user: str) -> None:
        if self._sink is not None:
            self._sink.deliver_kick(user)

    async def share_stats(self, node: str, stats: bytes, ttl: float) -> None:
        self._stats = stats  # one node: the only figures there are

    async def cluster_stats(self) -> list[bytes]:
        return [self._stats] if self._stats else []

    def sweep(self, now: float) -> int:
        """Forget quiet channels nobody is subscribed to; returns how many were forgotten."""
        forgotten = self._logs.sweep(now, self._subscribed)
        keys = self._keys
        while keys:
            first = next(iter(keys))
            if keys[first][3] > now:
                break
            del keys[first]
        return forgotten

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep(time.monotonic())
