"""Gaps are filled or told (wshub.core.gaps, wshub.core.channel): bounded holds, repairs that fail,
resyncs that must be retried. In-process, on a broker whose pub/sub loses what it is told to."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.test_hub import LossyBroker, Peer, settle
from wshub import Hub
from wshub.brokers import BrokerUnavailable
from wshub.model.config import Settings
from wshub.model.history import Recovery
from wshub.model.publication import Publication


class SlowBroker(LossyBroker):
    """History and recovery wait for ``gate``; ``fail`` makes them raise instead."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()
        self.fail: list[BaseException] = []

    async def _wait(self) -> None:
        self.waiting.set()
        await self.gate.wait()
        if self.fail:
            raise self.fail.pop(0)

    async def history(
        self, channel: str, offset: int | None, epoch: str | None, limit: int
    ) -> tuple[str, list[Publication]]:
        await self._wait()
        return await super().history(channel, offset, epoch, limit)

    async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Recovery:
        await self._wait()
        return await super().recover(channel, offset, epoch)


async def joined(hub: Hub, user: str) -> Peer:
    peer = Peer(hub, user)
    assert (await peer.say({"type": "join", "channel": "c"}))["type"] == "joined"
    return peer


def offsets(peer: Peer) -> list[int]:
    return [m["offset"] for m in peer.link.of_type("message")]


async def test_a_hold_is_bounded_and_what_overflowed_comes_from_history() -> None:
    broker = SlowBroker(history_size=100)
    hub = Hub(broker, Settings(queue_size=8))
    await hub.start()
    a = await joined(hub, "a")
    broker.gate.clear()
    broker.waiting.clear()
    broker.lose = {2}
    for i in range(9):
        await hub.publish("c", i)
    await broker.waiting.wait()  # the repair of offset 2 waits on history ...
    ch = hub._subscriptions.channels["c"]
    assert ch.held is not None and len(ch.held) == 4  # ... holding half a queue, no more
    broker.gate.set()
    for _ in range(5):
        await settle()
    assert offsets(a) == list(range(1, 10))
    assert a.link.closed is None
    await hub.stop()


async def test_a_repair_that_fails_tells_the_subscribers_and_the_channel_goes_on() -> None:
    broker = SlowBroker()
    hub = Hub(broker)
    await hub.start()
    a = await joined(hub, "a")
    broker.fail = [RuntimeError("a bug, not an outage")]
    broker.lose = {2}
    for i in range(3):
        await hub.publish("c", i)
    await settle()
    assert a.link.closed == (1011, "missed messages: rejoin")
    ch = hub._subscriptions.channels["c"]
    assert ch.held is None  # not wedged: the next subscriber gets the next publications
    b = await joined(hub, "b")
    await hub.publish("c", "after")
    await settle()
    assert offsets(b) == [4]
    await hub.stop()


async def test_a_resync_is_retried_until_the_broker_answers() -> None:
    broker = SlowBroker()
    hub = Hub(broker)
    await hub.start()
    a = await joined(hub, "a")
    broker.lose = {1, 2}
    await hub.publish("c", "lost-1")
    await hub.publish("c", "lost-2")
    broker.fail = [BrokerUnavailable("still down"), BrokerUnavailable("still down")]
    hub.resync()
    hub.resync()  # a second reconnect while the first check is retrying: one check
    for _ in range(40):
        await asyncio.sleep(0.05)
        if len(offsets(a)) == 2:
            break
    assert offsets(a) == [1, 2]
    assert not broker.fail
    await hub.stop()
