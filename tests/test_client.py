"""wshub.client against real `wshub serve` processes: requests, resume, restarts, dead links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import ServerFactory
from tests.proxy import TcpProxy
from tests.support import ServerProcess, connect
from wshub.client import (
    Client,
    Gap,
    MemberEvent,
    Message,
    Refused,
    ServerError,
    State,
    Subscription,
    ws_url,
)


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[TcpProxy]:
    p = await TcpProxy(server.port).start()
    yield p
    await p.close()


async def take(stream: Subscription, count: int, timeout: float = 10) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append(await anext(stream))
    return got


async def wait_for(predicate: object, timeout: float = 10) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def test_ws_url_accepts_http_and_base_urls() -> None:
    assert ws_url("http://h:1") == "ws://h:1/ws"
    assert ws_url("https://h:1/") == "wss://h:1/ws"
    assert ws_url("ws://h:1/ws", user="bob") == "ws://h:1/ws?user=bob"


async def test_requests_replies_and_streams(server: ServerProcess) -> None:
    members: list[MemberEvent] = []
    async with (
        Client(server.url, user="alice") as alice,
        Client(server.http, user="bob", on_member=members.append) as bob,
    ):
        assert (alice.user, alice.state) == ("alice", "open")
        stream = bob.subscribe("client:req", meta={"name": "Bob"})
        first = asyncio.ensure_future(take(stream, 2))
        await wait_for(lambda: "client:req" in bob._channels and bob._ready.is_set())
        await asyncio.sleep(0.1)  # the join reply is in flight
        await alice.join("client:req", meta={"name": "Alice"})
        assert await alice.publish("client:req", {"n": 1}) == 1
        assert await alice.publish("client:req", "two") == 2
        got = await first
        assert [(m.offset, m.sender, m.data) for m in got] == [
            (1, "alice", {"n": 1}),
            (2, "alice", "two"),
        ]
        await wait_for(lambda: members)
        assert (members[0].kind, members[0].user, members[0].meta) == (
            "joined",
            "alice",
            {"name": "Alice"},
        )
        present = {m["user"]: m["meta"] for m in await bob.presence("client:req")}
        assert present == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
        epoch, history = await bob.history("client:req", since=(1, got[0].epoch))
        assert (epoch, [m.data for m in history]) == (got[0].epoch, ["two"])
        directs = bob.directs()
        pending = asyncio.ensure_future(anext(directs))
        await asyncio.sleep(0.05)
        await alice.send("bob", {"hi": True})
        direct = await asyncio.wait_for(pending, 5)
        assert (direct.sender, direct.data) == ("alice", {"hi": True})
        with pytest.raises(ServerError) as info:
            await alice.leave("client:never-joined")
        assert info.value.code == "not_joined"
        await alice.ping()


async def test_refused_handshake_raises_with_the_status(make_server: ServerFactory) -> None:
    node = make_server("--max-connections", "1")
    async with Client(node.url):
        with pytest.raises(Refused) as info:
            await Client(node.url).connect()
    assert (info.value.status, info.value.retry_after) == (503, "1")


async def test_a_cut_link_reconnects_and_resumes_each_message_once_in_order(
    server: ServerProcess, proxy: TcpProxy
) -> None:
    states: list[State] = []
    gaps: list[Gap] = []
    async with (
        Client(proxy.url, user="carol", on_state=states.append, backoff_min=0.05) as carol,
        Client(server.url, user="dave") as dave,
    ):
        stream = carol.subscribe("client:cut", on_gap=gaps.append)
        first = asyncio.ensure_future(take(stream, 1))
        await wait_for(lambda: carol._channels.get("client:cut") is not None)
        await asyncio.sleep(0.1)
        await dave.publish("client:cut", 1)
        assert [m.data for m in await first] == [1]
        proxy.cut()
        await wait_for(lambda: carol.state == "reconnecting")
        for n in range(2, 6):  # published while carol is away
            await dave.publish("client:cut", n)
        await wait_for(lambda: carol.state == "open")
        await dave.publish("client:cut", 6)
        got = await take(stream, 5)
        assert [m.data for m in got] == [2, 3, 4, 5, 6]
        assert [m.offset for m in got] == [2, 3, 4, 5, 6]
        assert gaps == []
        assert carol.reconnects == 1
        assert states == ["connecting", "open", "reconnecting", "open"]
        # A request made while reconnecting waits for the link, then is served.
        proxy.cut()
        await wait_for(lambda: carol.state == "reconnecting")
        offset = await carol.publish("client:cut", 7)
        assert offset == 7
        assert [m.data for m in await take(stream, 1)] == [7]


async def test_a_restarted_server_means_a_gap_then_live_messages(
    make_server: ServerFactory,
) -> None:
    node = make_server()
    gaps: list[Gap] = []
    async with Client(node.url, user="erin", backoff_min=0.05, backoff_max=0.5) as erin:
        stream = erin.subscribe("client:restart", on_gap=gaps.append)
        first = asyncio.ensure_future(take(stream, 1))
        await wait_for(lambda: erin._channels.get("client:restart") is not None)
        await asyncio.sleep(0.1)
        async with connect(node.url, "frank") as frank:
            await frank.publish("client:restart", "before")
        (before,) = await first
        await asyncio.to_thread(node.restart)
        await wait_for(lambda: erin.state == "open" and erin.reconnects == 1)
        async with connect(node.url, "frank") as frank:
            await frank.publish("client:restart", "after")
        (after,) = await take(stream, 1)
        assert (after.data, after.offset) == ("after", 1)
        assert after.epoch != before.epoch
        assert [(g.last_offset, g.last_epoch, g.offset) for g in gaps] == [(1, before.epoch, 0)]


async def test_a_frozen_link_is_found_by_the_heartbeat(make_server: ServerFactory) -> None:
    node = make_server("--ping-interval", "0.5")
    proxy = await TcpProxy(node.port).start()
    try:
        async with Client(proxy.url, user="gus", backoff_min=0.05) as gus:
            assert gus.welcome["heartbeat"] == 0.5
            stream = gus.subscribe("client:frozen")
            await gus.join("client:frozen")
            proxy.freeze()
            await wait_for(lambda: gus.state == "reconnecting", timeout=5)
            proxy.thaw()
            await wait_for(lambda: gus.state == "open", timeout=5)
            async with connect(node.url, "hal") as hal:
                await hal.publish("client:frozen", "alive")
            assert [m.data for m in await take(stream, 1)] == ["alive"]
    finally:
        await proxy.close()
