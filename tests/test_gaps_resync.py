"""After the broker reconnects, each channel's position is checked (wshub.core.gaps): nothing is
redelivered when nothing was missed, and a broker that lost its history (Redis flushed)
starts the channel's offsets again without closing anyone. In-process, on the memory broker."""

from __future__ import annotations

import asyncio

from tests.test_hub import Peer
from wshub import Hub
from wshub.brokers.memory import MemoryBroker
from wshub.model.history import ChannelLogs


class FlushableBroker(MemoryBroker):
    def flush(self) -> None:
        """Lose every channel's history and position, as a flushed Redis does."""
        self._logs = ChannelLogs(self.history_size, self.history_ttl, self.keep_position)


async def checked(hub: Hub, channel: str) -> None:
    """Wait until the position check that ``hub.resync()`` started for ``channel`` is done."""
    ch = hub._subscriptions.channels[channel]
    assert ch.syncing
    async with asyncio.timeout(5):
        while ch.syncing:
            await asyncio.sleep(0.01)


def messages(peer: Peer) -> list[tuple[str, int, str]]:
    return [(m["epoch"], m["offset"], m["data"]) for m in peer.link.of_type("message")]


async def test_a_resync_that_finds_nothing_missed_redelivers_nothing() -> None:
    hub = Hub(MemoryBroker())
    await hub.start()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c"})
    await hub.publish("c", "one")
    hub.resync()
    await checked(hub, "c")
    await hub.publish("c", "two")
    await asyncio.sleep(0)
    assert [m[1:] for m in messages(a)] == [(1, "one"), (2, "two")]
    assert a.link.closed is None
    await hub.stop()


async def test_after_a_flush_the_channel_starts_again_at_offset_one_in_a_new_epoch() -> None:
    broker = FlushableBroker()
    hub = Hub(broker)
    await hub.start()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c"})
    await hub.publish("c", "before")
    broker.flush()
    hub.resync()
    await checked(hub, "c")
    await hub.publish("c", "after")
    await asyncio.sleep(0)
    (old, one, before), (new, again, after) = messages(a)
    assert (one, before, again, after) == (1, "before", 1, "after")
    assert new != old
    assert a.link.closed is None
    await hub.stop()
