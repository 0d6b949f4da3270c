"""What a hub does when a broker call or an application hook fails: the client is told, the
channel is usable again once the broker is, and the failure is logged. In-process, on the
memory broker with the failure injected into one call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.test_hub import Peer, settle
from wshub import Hub
from wshub.brokers import BrokerUnavailable
from wshub.brokers.memory import MemoryBroker


class RefusingBroker(MemoryBroker):
    """``subscribe`` waits for ``gate``, then raises while ``refuse`` is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refuse = True
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def subscribe(self, channel: str) -> None:
        self.waiting.set()
        await self.gate.wait()
        if self.refuse:
            raise BrokerUnavailable("redis is down")
        await super().subscribe(channel)


async def test_a_failed_subscribe_answers_every_waiting_joiner_and_a_later_join_works() -> None:
    broker = RefusingBroker()
    hub = Hub(broker)
    await hub.start()
    try:
        a, b = Peer(hub, "a"), Peer(hub, "b")
        first = asyncio.create_task(a.say({"type": "join", "channel": "c", "id": 1}))
        await broker.waiting.wait()
        second = asyncio.create_task(b.say({"type": "join", "channel": "c", "id": 2}))
        await settle()  # b waits on the subscribe a's join started
        broker.gate.set()
        for peer, reply in ((a, await first), (b, await second)):
            assert reply["type"] == "error" and reply["code"] == "unavailable", peer.link.sent
        broker.refuse = False
        assert (await a.say({"type": "join", "channel": "c", "id": 3}))["type"] == "joined"
        await hub.publish("c", "after")
        await settle()
        assert [m["data"] for m in a.link.of_type("message")] == ["after"]
        assert b.link.of_type("message") == []  # its join failed: not subscribed
    finally:
        await hub.stop()


async def test_a_failing_disconnect_hook_is_logged_and_the_user_leaves_presence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def on_disconnect(user: str, session: str) -> None:
        raise RuntimeError("hook bug")

    hub = Hub("memory://", on_disconnect=on_disconnect)
    await hub.start()
    try:
        a, b = Peer(hub, "a"), Peer(hub, "b")
        for peer in (a, b):
            await peer.say({"type": "join", "channel": "c"})
        with caplog.at_level("ERROR"):
            await hub.detach(b.conn)
        assert "on_disconnect hook failed for b" in caplog.text
        await settle()
        assert [m["user"] for m in a.link.of_type("member_left")] == ["b"]
        reply = await a.say({"type": "presence", "channel": "c", "id": 1})
        assert [m["user"] for m in reply["members"]] == ["a"]
    finally:
        await hub.stop()


class GatedBroker(MemoryBroker):
    """``recover`` or ``presence_add``, whichever is named in ``gated``, waits for ``gate``."""

    def __init__(self, gated: str) -> None:
        super().__init__()
        self.gated = gated
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def _wait(self, call: str) -> None:
        if call == self.gated:
            self.waiting.set()
            await self.gate.wait()

    async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Any:
        await self._wait("recover")
        return await super().recover(channel, offset, epoch)

    async def presence_add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        await self._wait("presence_add")
        return await super().presence_add(channel, user, session, meta)


@pytest.mark.parametrize("gated", ["recover", "presence_add"])
async def test_a_client_gone_while_its_join_waits_on_the_broker_leaves_no_trace(
    gated: str,
) -> None:
    broker = GatedBroker(gated)
    hub = Hub(broker)
    await hub.start()
    try:
        a = Peer(hub, "a")
        join = asyncio.create_task(hub.handle_text(a.conn, '{"type":"join","channel":"c"}'))
        await broker.waiting.wait()
        await hub.detach(a.conn)
        broker.gate.set()
        await join
        await settle()
        assert await broker.presence("c") == []  # no member left behind by the late join
        assert "c" not in hub._subscriptions.channels and await broker.channels() == {}
        assert a.link.of_type("joined") == []
        # The channel works for whoever joins next.
        broker.gated = ""
        b = Peer(hub, "b")
        reply = await b.say({"type": "presence", "channel": "c", "id": 1})
        assert reply["members"] == []
        assert (await b.say({"type": "join", "channel": "c"}))["type"] == "joined"
        await hub.publish("c", "next")
        await settle()
        assert [m["data"] for m in b.link.of_type("message")] == ["next"]
    finally:
        await hub.stop()
