"""Each subscriber gets a channel's messages once, in offset order, when the broker's pub/sub
repeats a publication or runs behind what a joiner read from history (wshub.core.channel).
In-process, on the memory broker with its pub/sub made to misbehave as a shared one may."""

from __future__ import annotations

from typing import Any

from tests.test_hub import Peer, settle
from wshub import Hub
from wshub.brokers.memory import MemoryBroker
from wshub.model.publication import Publication


class UnevenBroker(MemoryBroker):
    """Pub/sub that delivers each publication ``copies`` times, or, while ``lagging``, keeps
    them in ``late`` until :meth:`catch_up` (a node whose subscription runs behind)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.copies = 1
        self.lagging = False
        self.late: list[Publication] = []

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        sink, self._sink = self._sink, None
        try:
            pub = await super().publish(channel, data, sender, idempotency_key)
        finally:
            self._sink = sink
        if sink is not None and channel in self._subscribed:
            if self.lagging:
                self.late.append(pub)
            else:
                for _ in range(self.copies):
                    sink.deliver(pub)
        return pub

    def catch_up(self) -> None:
        late, self.late, self.lagging = self.late, [], False
        assert self._sink is not None
        for pub in late:
            self._sink.deliver(pub)


def offsets(peer: Peer) -> list[int]:
    return [m["offset"] for m in peer.link.of_type("message")]


async def test_a_publication_the_broker_repeats_is_delivered_once() -> None:
    broker = UnevenBroker()
    hub = Hub(broker)
    await hub.start()
    a = Peer(hub, "a")
    assert (await a.say({"type": "join", "channel": "c"}))["type"] == "joined"
    broker.copies = 2
    for i in range(3):
        await hub.publish("c", i)
    await settle()
    assert offsets(a) == [1, 2, 3]
    await hub.stop()


async def test_a_joiner_ahead_of_the_live_stream_gets_each_message_once_and_events_meanwhile() -> (
    None
):
    broker = UnevenBroker()
    hub = Hub(broker)
    await hub.start()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c"})
    broker.lagging = True
    for i in range(2):
        await hub.publish("c", i)
    # b joins at offset 2, which this node's stream has not reached.
    b = Peer(hub, "b")
    joined = await b.say({"type": "join", "channel": "c"})
    assert joined["type"] == "joined" and joined["offset"] == 2
    assert offsets(b) == [] and offsets(a) == []
    # An event while b waits for the stream to catch up reaches b at once.
    d = Peer(hub, "d")
    await d.say({"type": "join", "channel": "c"})
    assert [m["user"] for m in b.link.of_type("member_joined")] == ["d"]
    broker.catch_up()
    await hub.publish("c", 2)
    await settle()
    assert offsets(a) == [1, 2, 3]
    assert offsets(b) == [3]  # from where it joined: 1 and 2 are older
    assert offsets(d) == [3]
    await hub.stop()
