"""Graceful drain on SIGTERM/SIGINT, and /readyz, on real `wshub serve` processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerFactory
from tests.support import Client, RedisProcess, ServerProcess, connect, http_get

pytestmark = pytest.mark.slow  # real nodes draining over seconds

TOTAL = 300


def room() -> str:
    return f"drain:{uuid.uuid4().hex[:8]}"


async def closed_with(client: Client, timeout: float = 15.0) -> tuple[float, int | None]:
    """Read until the server closes; when it did and with which code."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            frame = await client.recv(timeout)
            assert frame["type"] != "message", "no message may follow the queued ones"
    return time.monotonic(), client.ws.close_code


def signal_node(node: ServerProcess, sig: int = signal.SIGTERM) -> None:
    assert node.proc is not None
    node.proc.send_signal(sig)


async def exit_code(node: ServerProcess, timeout: float = 15.0) -> int:
    assert node.proc is not None
    return await asyncio.wait_for(asyncio.to_thread(node.proc.wait), timeout)


async def test_drain_flushes_refuses_closes_in_batches_and_exits_0(
    make_server: ServerFactory,
) -> None:
    node = make_server("--drain-seconds", "2")
    channel = room()
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(node.url, f"d{i}")) for i in range(40)]
        sub = clients[0]
        await sub.join(channel)
        for i in range(50):  # acknowledged, so queued for the subscriber before the signal
            await clients[1].publish(channel, i)
        signal_node(node)
        await asyncio.sleep(0.3)
        status, body = await http_get(f"{node.http}/readyz")
        assert (status, b"draining" in body) == (503, True)
        assert (await http_get(f"{node.http}/healthz"))[0] == 200
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{node.url}/ws?user=late")
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "1"
        assert [m["data"] for m in await sub.messages(50)] == list(range(50))
        ends = await asyncio.gather(*(closed_with(c) for c in clients))
    assert {code for _, code in ends} == {1001}
    times = sorted(t for t, _ in ends)
    assert times[-1] - times[0] >= 1.0  # spread over the drain, not all at once
    assert await exit_code(node) == 0


async def test_a_second_signal_exits_at_once(make_server: ServerFactory) -> None:
    node = make_server("--drain-seconds", "60")
    async with contextlib.AsyncExitStack() as stack:
        for i in range(30):  # more than one batch of closes: the drain lasts
            await stack.enter_async_context(connect(node.url, f"s{i}"))
        signal_node(node, signal.SIGINT)
        await asyncio.sleep(0.5)
        assert node.proc is not None and node.proc.poll() is None  # still draining
        started = time.monotonic()
        signal_node(node, signal.SIGINT)
        assert await exit_code(node, 5) != 0
        assert time.monotonic() - started < 3


async def test_clients_of_a_drained_node_resume_on_the_other_without_loss(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a = make_server("--broker", redis.url, "--drain-seconds", "1")
    b = make_server("--broker", redis.url)
    channel = room()
    acked: dict[int, Any] = {}
    streams: dict[str, list[dict[str, Any]]] = {}

    async def subscriber(name: str) -> None:
        got = streams[name] = []
        async with connect(a.url, name) as sub:
            joined = await sub.join(channel)
            epoch = joined["epoch"]
            with contextlib.suppress(ConnectionClosed):
                while True:
                    frame = await sub.recv(15)
                    if frame["type"] == "message":
                        got.append(frame)
            assert sub.ws.close_code == 1001
        last = got[-1]["offset"] if got else joined["offset"]
        async with connect(b.url, name) as sub:
            rejoined = await sub.join(channel, since={"offset": last, "epoch": epoch})
            assert rejoined["recovered"] is True
            while not got or got[-1]["offset"] < TOTAL:  # a new channel: offsets 1..TOTAL
                frame = await sub.recv(15)
                if frame["type"] == "message":
                    got.append(frame)

    async with connect(b.url, "watcher") as watcher, connect(a.url, "leaver") as leaver:
        await watcher.join(channel)
        await leaver.join(channel)
        presence = await watcher.request({"type": "presence", "channel": channel})
        assert "leaver" in {m["user"] for m in presence["members"]}
        subs = [asyncio.create_task(subscriber(f"r{i}")) for i in range(8)]
        await asyncio.sleep(0.5)
        async with connect(b.url, "pub") as pub:
            for i in range(TOTAL):
                acked[(await pub.publish(channel, i))["offset"]] = i
                if i == 100:
                    signal_node(a)
                await asyncio.sleep(0.005)
        await asyncio.wait_for(asyncio.gather(*subs), 30)
        assert await exit_code(a) == 0
        # The drained node left presence itself: no waiting for its presence TTL (30 s).
        presence = await watcher.request({"type": "presence", "channel": channel})
        assert "leaver" not in {m["user"] for m in presence["members"]}
        with contextlib.suppress(ConnectionClosed):
            await leaver.recv(1)
    for got in streams.values():
        offsets = [m["offset"] for m in got]
        assert offsets == list(range(offsets[0], TOTAL + 1))  # once each, in order
        assert all(acked[m["offset"]] == m["data"] for m in got)
        assert offsets[0] <= min(acked)


async def test_each_worker_drains_itself(make_server: ServerFactory, redis: RedisProcess) -> None:
    srv = make_server("--broker", redis.url, "--workers", "2", "--drain-seconds", "1")
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        nodes: set[str] = set()
        deadline = time.monotonic() + 15
        while len(nodes) < 2 or len(clients) < 10:
            assert time.monotonic() < deadline, "both workers should take connections"
            client = await stack.enter_async_context(connect(srv.url, f"w{len(clients)}"))
            clients.append(client)
            nodes.add(client.welcome["server"]["node"])
            await asyncio.sleep(0.05)
        signal_node(srv)
        ends = await asyncio.gather(*(closed_with(c) for c in clients))
    assert {code for _, code in ends} == {1001}
    assert await exit_code(srv) == 0


async def test_readyz_follows_the_broker(make_server: ServerFactory, redis: RedisProcess) -> None:
    memory = make_server()
    assert (await http_get(f"{memory.http}/readyz"))[0] == 200
    node = make_server("--broker", redis.url)
    assert (await http_get(f"{node.http}/readyz")) == (
        200,
        b'{"status":"ready","connections":0}',
    )
    redis.stop()

    async def status() -> tuple[int, bytes]:
        return await http_get(f"{node.http}/readyz")

    deadline = time.monotonic() + 10
    while (await status())[0] != 503:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert b"broker unavailable" in (await status())[1]
    assert (await http_get(f"{node.http}/healthz"))[0] == 200  # alive, just not ready
    redis.start()
    while (await status())[0] != 200:
        assert time.monotonic() < deadline + 10
        await asyncio.sleep(0.1)
