"""A Redis that stops answering (SIGSTOP), and publications retried with an idempotency key.

Real `redis-server` processes, real `wshub serve` nodes, clients on the `websockets` library
(which answers the server's WebSocket pings by itself, as any client does).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import ServerFactory
from tests.support import Client, RedisProcess, connect

# Keepalive gives up on a peer after ping interval + ping timeout = 3 s without a pong. Each
# frame is answered within 4 s: longer, so that a connection whose reading stopped while a
# frame waits on the broker would be closed before its answer came.
KEEPALIVE = ("--ping-interval", "1", "--ping-timeout", "2")
BOUND = 4.0
SLACK = 1.5
"""Scheduling slack on a machine shared with other test runs."""


def room() -> str:
    return f"room:{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def frozen(redis: RedisProcess) -> Iterator[None]:
    """Redis stops answering, keeping every connection open: a stall, not a crash."""
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis.proc.send_signal(signal.SIGCONT)


async def timed(client: Client, frame: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    reply = await client.request(frame, timeout=BOUND + 5)
    return reply, time.monotonic() - started


async def test_a_client_waiting_on_a_frozen_redis_is_answered_and_kept(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url, "--reply-timeout", str(BOUND), *KEEPALIVE)
    channel, fresh = room(), room()
    async with connect(node.url, "alice") as alice:
        await alice.join(channel)
        await alice.publish(channel, "before")
        assert [m["data"] for m in await alice.messages(1)] == ["before"]
        with frozen(redis):
            frozen_at = time.monotonic()
            # The command reaches Redis and is never confirmed: the outcome is unknown.
            publish = {"type": "publish", "channel": channel, "data": "during"}
            reply, took = await timed(alice, publish)
            assert (reply["type"], reply["code"]) == ("error", "timeout"), reply
            assert took < BOUND + SLACK
            # Two frames at once: the join is cut off at its deadline, and the ping behind
            # it is answered after it, in order, within the same bound. Served in the
            # receive loop, the join would leave the ping unread, the transport paused and
            # the WebSocket pongs unread: keepalive would drop this live client at 3 s.
            await alice.send({"type": "join", "channel": fresh, "id": "j"})
            await alice.send({"type": "ping", "id": "p"})
            sent = time.monotonic()
            joined = await alice.recv(BOUND + 5)
            pong = await alice.recv(BOUND + 5)
            assert (joined["id"], joined["type"], joined["code"]) == ("j", "error", "unavailable")
            assert pong == {"type": "pong", "id": "p"}
            assert time.monotonic() - sent < BOUND + SLACK
        assert time.monotonic() - frozen_at > 2 * BOUND  # far past the keepalive's 3 s
        ping, _ = await timed(alice, {"type": "ping"})
        assert ping["type"] == "pong"
        assert (await alice.join(fresh))["recovered"] is False
        after = await alice.publish(channel, "after")
        got = [m["data"] for m in await alice.messages(2, timeout=10)]
        # "during" was cut off, not refused: Redis ran it when it woke up (or never got it).
        assert got in (["during", "after"], ["after"]), got
        assert after["offset"] == 1 + len(got)
    assert "keepalive" not in node.log()


async def test_a_retry_on_another_node_gets_the_same_offset(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a, b = (make_server("--broker", redis.url) for _ in range(2))
    channel = room()
    async with (
        connect(a.url, "pub") as on_a,
        connect(b.url, "pub") as on_b,
        connect(b.url, "reader") as reader,
    ):
        assert on_a.welcome["server"]["node"] != on_b.welcome["server"]["node"]
        await reader.join(channel)
        frame = {"type": "publish", "channel": channel, "data": "once", "idempotency_key": "x-1"}
        first = await on_a.request(frame)
        again = await on_b.request({**frame, "data": "twice?"})
        assert first["type"] == again["type"] == "ack"
        assert (
            (again["offset"], again["epoch"])
            == (first["offset"], first["epoch"])
            == (1, again["epoch"])
        )
        mark = await on_b.publish(channel, "mark")
        assert mark["offset"] == 2
        got = await reader.messages(2)
        assert [(m["offset"], m["data"]) for m in got] == [(1, "once"), (2, "mark")]


async def test_a_retry_after_a_timeout_in_a_freeze_publishes_once(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a, b = (make_server("--broker", redis.url, "--reply-timeout", "1") for _ in range(2))
    channel = room()
    async with connect(a.url, "pub") as pub, connect(b.url, "reader") as reader:
        await reader.join(channel)
        await pub.publish(channel, "first")
        frame = {"type": "publish", "channel": channel, "data": "retried", "idempotency_key": "k"}
        with frozen(redis):
            reply = await pub.request(frame)
            assert (reply["type"], reply["code"]) == ("error", "timeout"), reply
        # Retry as the protocol says, until the outcome is known.
        for _ in range(20):
            reply = await pub.request(frame)
            if reply["type"] == "ack":
                break
            assert reply["code"] in ("timeout", "unavailable"), reply
            await asyncio.sleep(0.2)
        assert reply["type"] == "ack", reply
        assert reply["offset"] == 2
        await pub.publish(channel, "mark")
        got = await reader.messages(3, timeout=15)
        assert [(m["offset"], m["data"]) for m in got] == [
            (1, "first"),
            (2, "retried"),
            (3, "mark"),
        ]
        history = await pub.request({"type": "history", "channel": channel})
        assert [m["data"] for m in history["messages"]] == ["first", "retried", "mark"]


async def test_a_client_connecting_to_a_frozen_redis_is_read_until_welcome(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url, "--reply-timeout", "1", *KEEPALIVE)
    channel = room()
    with frozen(redis):
        # Greeting waits on Redis (direct messages to "bob" must reach this node); frames
        # sent meanwhile wait behind it, and the connection is read all along.
        async with websockets.connect(f"{node.url}/ws?user=bob", close_timeout=1) as ws:
            bob = Client(ws)
            await bob.send({"type": "join", "channel": channel, "id": 1})
            await bob.send({"type": "ping", "id": 2})
            welcome = await bob.recv(10)
            assert welcome["type"] == "welcome"
            joined, pong = await bob.recv(5), await bob.recv(5)
            assert (joined["id"], joined["code"]) == (1, "unavailable")
            assert pong == {"type": "pong", "id": 2}
            stalled = time.monotonic()
            while time.monotonic() - stalled < 3.5:  # past the keepalive's limit
                assert (await bob.request({"type": "ping"}))["type"] == "pong"
                await asyncio.sleep(0.5)
            redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            # The node recovers by itself: a join is answered `joined` once its pub/sub link
            # is back (`unavailable` meanwhile, which says "retry"), within the broker timeout.
            deadline = time.monotonic() + 15
            while (reply := await bob.request({"type": "join", "channel": channel}))[
                "type"
            ] != "joined":
                assert reply["code"] == "unavailable", reply
                assert time.monotonic() < deadline, "the node did not recover after the thaw"
                await asyncio.sleep(0.2)


async def test_the_http_api_answers_a_frozen_redis_in_time_and_a_retry_publishes_once(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url, "--reply-timeout", "1", WSHUB_API_KEY="k")
    channel = room()
    body = {"channel": channel, "data": "paid", "idempotency_key": "order-1-paid"}
    async with httpx.AsyncClient(
        base_url=node.http, headers={"Authorization": "apikey k"}, timeout=10
    ) as api:
        with frozen(redis):
            started = time.monotonic()
            published = await api.post("/api/publish", json=body)
            sent = await api.post("/api/send", json={"to": "alice", "data": 1})
            assert (published.status_code, sent.status_code) == (504, 504)
            assert "idempotency_key" in published.json()["detail"]
            assert time.monotonic() - started < 2 * (1 + SLACK)
        for _ in range(20):
            retried = await api.post("/api/publish", json=body)
            if retried.status_code == 200:
                break
            assert retried.status_code in (503, 504), retried.text
            await asyncio.sleep(0.2)
        assert retried.status_code == 200, retried.text
        assert retried.json()["offset"] == 1
        page = await api.get(f"/api/channels/{channel}/history")
        assert [m["data"] for m in page.json()["messages"]] == ["paid"]


async def test_a_key_is_remembered_for_the_idempotency_ttl_on_redis(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url, "--idempotency-ttl", "1")
    channel = room()
    async with connect(node.url, "pub") as pub:
        frame = {"type": "publish", "channel": channel, "data": 1, "idempotency_key": "k"}
        started = time.monotonic()  # before the key is set, so its expiry is after + 1 s
        first = await pub.request(frame)
        assert first["offset"] == 1
        while (reply := await pub.request(frame))["offset"] == 1:  # a repeat, until it expires
            assert time.monotonic() - started < 5, "the key was never forgotten"
            await asyncio.sleep(0.1)
        assert time.monotonic() - started > 0.9
        assert reply["offset"] == 2  # a new publication, remembered again
        assert (await pub.request(frame))["offset"] == 2


async def test_the_chat_closes_with_1011_while_redis_is_down(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url)
    redis.stop()
    async with websockets.connect(f"{node.url}/ws/carol", close_timeout=1) as ws:
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert "broker unavailable" in closed.value.rcvd.reason
    redis.start()
    deadline = time.monotonic() + 15
    while True:  # the node reconnects by itself; the chat works again
        try:
            async with websockets.connect(f"{node.url}/ws/dave", close_timeout=1) as dave:
                await dave.send("back")
                assert await asyncio.wait_for(dave.recv(), 5) == "You wrote: back"
                redis.stop()
                for line in ("still here", "and here"):  # echoed, though not broadcast
                    await dave.send(line)
                    got = await asyncio.wait_for(dave.recv(), 5)
                    while isinstance(got, str) and got.startswith("Client #"):
                        got = await asyncio.wait_for(dave.recv(), 5)
                    assert got == f"You wrote: {line}"
                break
        except websockets.ConnectionClosedError:
            assert time.monotonic() < deadline, "the chat never came back"
            await asyncio.sleep(0.2)
