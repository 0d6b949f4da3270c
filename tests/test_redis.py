"""Many nodes on one real Redis: real `redis-server`, real `wshub serve` processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.support import Client, RedisProcess, ServerProcess, connect, serve_refused

pytestmark = pytest.mark.slow  # real Redis and several nodes


def room() -> str:
    return f"room:{uuid.uuid4().hex[:8]}"


async def next_of(client: Client, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
    """The next frame of a type (and matching fields), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await client.recv(max(0.01, deadline - time.monotonic()))
        if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
            return frame


def nodes(
    make_server: ServerFactory, redis: RedisProcess, n: int, *flags: str
) -> list[ServerProcess]:
    return [make_server("--broker", redis.url, *flags) for _ in range(n)]


async def test_three_nodes_200_messages_one_offset_sequence(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a, b, c = nodes(make_server, redis, 3)
    channel = room()
    async with contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(connect(node.url, f"sub-{i}-{j}"))
            for i, node in enumerate((a, b, c))
            for j in range(2)
        ]
        assert len({s.welcome["server"]["node"] for s in subs}) == 3
        for s in subs:
            await s.join(channel)
        pub_a = await stack.enter_async_context(connect(a.url, "pub-a"))
        pub_b = await stack.enter_async_context(connect(b.url, "pub-b"))

        async def publish(pub: Client, tag: str) -> None:
            for i in range(100):
                await pub.publish(channel, f"{tag}{i}")

        publishing = asyncio.gather(publish(pub_a, "a"), publish(pub_b, "b"))
        streams = await asyncio.gather(*(s.messages(200, timeout=20) for s in subs))
        await publishing
        for stream in streams:
            assert [m["offset"] for m in stream] == list(range(1, 201))
            assert len({m["epoch"] for m in stream}) == 1
        first = [m["data"] for m in streams[0]]
        assert all([m["data"] for m in s] == first for s in streams)  # one order everywhere
        assert sorted(first) == sorted(
            [f"a{i}" for i in range(100)] + [f"b{i}" for i in range(100)]
        )
        # Each publisher's own messages keep their order within the shared sequence.
        assert [d for d in first if d.startswith("a")] == [f"a{i}" for i in range(100)]


async def test_direct_presence_events_and_history_across_nodes(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a, b, c = nodes(make_server, redis, 3)
    channel = room()
    async with (
        connect(a.url, "alice") as alice_a,
        connect(b.url, "alice") as alice_b,
        connect(c.url, "carol") as carol,
    ):
        await carol.join(channel, meta={"role": "host"})
        await alice_a.join(channel, meta={"n": 1})
        joined = await next_of(carol, "member_joined")
        assert (joined["user"], joined["meta"]) == ("alice", {"n": 1})
        await alice_b.join(channel, meta={"n": 2})  # alice's second connection: no event
        presence = await carol.request({"type": "presence", "channel": channel})
        assert presence["members"] == [
            {"user": "alice", "meta": {"n": 2}, "connections": 2},
            {"user": "carol", "meta": {"role": "host"}, "connections": 1},
        ]
        # A direct message reaches every connection of the user, on every node.
        await carol.request({"type": "send", "to": "alice", "data": {"hi": "there"}})
        for conn in (alice_a, alice_b):
            direct = await next_of(conn, "direct")
            assert (direct["from"], direct["data"]) == ("carol", {"hi": "there"})
        # History is the cluster's, whichever node asks.
        for i in range(3):
            await alice_a.publish(channel, i)
        for reader in (alice_b, carol):
            history = await reader.request({"type": "history", "channel": channel})
            assert [m["data"] for m in history["messages"]] == [0, 1, 2]
        await alice_a.request({"type": "leave", "channel": channel})
        await alice_b.request({"type": "leave", "channel": channel})
        left = await next_of(carol, "member_left")
        assert (left["user"], left["meta"]) == ("alice", {"n": 2})


async def test_recovery_on_another_node(make_server: ServerFactory, redis: RedisProcess) -> None:
    a, b = nodes(make_server, redis, 2)
    channel = room()
    async with connect(b.url, "pub") as pub:
        async with connect(a.url, "sub") as sub:
            joined = await sub.join(channel)
            await pub.publish(channel, "seen")
            (seen,) = await sub.messages(1)
        for i in range(4):
            await pub.publish(channel, f"missed-{i}")
        async with connect(b.url, "sub") as sub:  # resumes on the other node
            since = {"offset": seen["offset"], "epoch": joined["epoch"]}
            rejoined = await sub.join(channel, since=since)
            assert (rejoined["recovered"], rejoined["offset"]) == (True, 5)
            await pub.publish(channel, "new")
            got = await sub.messages(5)
            assert [m["data"] for m in got] == [f"missed-{i}" for i in range(4)] + ["new"]


async def test_a_killed_node_leaves_presence_within_its_ttl(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a, b = nodes(make_server, redis, 2, "--presence-ttl", "4")
    channel = room()
    async with connect(a.url, "watcher") as watcher, connect(b.url, "ghost") as ghost:
        await watcher.join(channel)
        await ghost.join(channel, meta={"m": 1})
        await next_of(watcher, "member_joined", user="ghost")
        assert b.proc is not None
        killed_at = time.monotonic()
        b.proc.send_signal(signal.SIGKILL)
        left = await next_of(watcher, "member_left", timeout=10, user="ghost")
        assert time.monotonic() - killed_at <= 4.5
        assert left["meta"] == {"m": 1}
        presence = await watcher.request({"type": "presence", "channel": channel})
        assert [m["user"] for m in presence["members"]] == ["watcher"]


async def test_nodes_ride_out_a_redis_restart(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a, b = nodes(make_server, redis, 2)
    channel = room()
    async with connect(a.url, "sub") as sub, connect(b.url, "pub") as pub:
        await sub.join(channel)
        for i in range(20):
            await pub.publish(channel, i)
        await sub.messages(20)
        redis.stop()
        # The nodes stay up; publish and send answer "unavailable", pings still work.
        reply = await pub.request({"type": "publish", "channel": channel, "data": "lost"})
        assert (reply["type"], reply["code"]) == ("error", "unavailable")
        reply = await pub.request({"type": "send", "to": "sub", "data": 1})
        assert reply["code"] == "unavailable"
        assert (await sub.request({"type": "ping"}))["type"] == "pong"
        redis.start()  # same port, empty: its data is gone
        restarted = time.monotonic()
        while True:
            reply = await pub.request({"type": "publish", "channel": channel, "data": "back"})
            if reply["type"] == "ack":
                break
            assert time.monotonic() - restarted < 10
            await asyncio.sleep(0.2)
        assert reply["offset"] == 1  # a new epoch: Redis lost the channel's history
        # The subscriber's node resubscribed by itself: the message arrives.
        msg = await next_of(sub, "message", data="back")
        assert msg["offset"] == 1
        # Presence and direct messages work again too.
        assert (await pub.request({"type": "send", "to": "sub", "data": 2}))["type"] == "ack"
        assert (await next_of(sub, "direct"))["data"] == 2
    for node in (a, b):
        assert node.log().count("is unreachable") == 1, node.log()


async def test_workers_serve_one_port(make_server: ServerFactory, redis: RedisProcess) -> None:
    srv = make_server("--broker", redis.url, "--workers", "2")
    seen: set[str] = set()
    channel = room()
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        # /healthz answers as soon as one worker is up: connect until both take connections.
        deadline = time.monotonic() + 15
        while len(clients) < 30 or len(seen) < 2:
            assert time.monotonic() < deadline, "both processes should take connections"
            client = await stack.enter_async_context(connect(srv.url, f"w{len(clients)}"))
            clients.append(client)
            seen.add(client.welcome["server"]["node"])
            if len(clients) >= 30:
                await asyncio.sleep(0.1)
        for client in clients:
            await client.join(channel)
        await clients[0].publish(channel, "to all workers")
        for client in clients:
            assert [m["data"] for m in await client.messages(1)] == ["to all workers"]


@pytest.mark.parametrize("broker", ["memory://", ""])
def test_workers_need_a_shared_broker(broker: str) -> None:
    args = ["--workers", "2"] + (["--broker", broker] if broker else [])
    assert "needs a shared broker" in serve_refused(*args).stderr


async def test_password_in_the_url(make_server: ServerFactory) -> None:
    secured = RedisProcess(password="s3cret").start()
    try:
        host = f"127.0.0.1:{secured.port}"
        good = make_server("--broker", f"redis://:s3cret@{host}/0")
        async with connect(good.url) as client:
            assert (await client.publish(room(), 1))["offset"] == 1
        bad = make_server("--broker", f"redis://:wrong@{host}/0")
        async with connect(bad.url) as client:
            reply = await client.request({"type": "publish", "channel": room(), "data": 1})
            assert reply["code"] == "unavailable"
        assert "s3cret" not in good.log() and "wrong" not in bad.log()
    finally:
        secured.stop()


async def test_the_dashboard_shows_every_node(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    import json
    import urllib.request

    a, b = (make_server("--broker", redis.url, "--api-key", "k3y") for _ in range(2))

    def stats() -> dict[str, Any]:
        request = urllib.request.Request(
            f"{a.http}/admin/stats", headers={"Authorization": "apikey k3y"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            body: dict[str, Any] = json.load(resp)
            return body

    async with connect(a.url, "x"), connect(b.url, "y"), connect(b.url, "z"):
        deadline = time.monotonic() + 10
        while True:
            nodes = (await asyncio.to_thread(stats))["nodes"]
            if sorted(n["connections"] for n in nodes) == [1, 2]:
                break
            assert time.monotonic() < deadline, nodes
            await asyncio.sleep(0.3)
        assert len({n["node"] for n in nodes}) == 2
    b.stop()  # a node that is gone drops off the dashboard by itself
    deadline = time.monotonic() + 15
    while len((await asyncio.to_thread(stats))["nodes"]) != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
