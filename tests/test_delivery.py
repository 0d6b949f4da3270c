"""Delivery under stress: slow consumers, peers that vanish, heartbeats. Real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import uuid
from typing import Any

import websockets

from tests.conftest import ServerFactory
from tests.support import Client, connect

KB = "x" * 1000


def reset(client: Client) -> None:
    """Vanish like a crashed peer: a TCP reset, no close frame."""
    sock = client.ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.ws.transport.abort()


async def wait_for_member_left(watcher: Client, user: str, timeout: float = 10.0) -> None:
    while True:
        frame = await watcher.recv(timeout)
        if frame["type"] == "member_left" and frame["user"] == user:
            return


async def read_until_closed(client: Client) -> tuple[int, websockets.ConnectionClosed]:
    """Read frames until the connection closes: how many, and how it closed."""
    received = 0
    while True:
        try:
            await asyncio.wait_for(client.ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            return received, closed
        received += 1


async def publish_all(
    pub: Client, channel: str, count: int, payload: Any = KB, window: int = 64
) -> None:
    """Publish ``count`` messages, pipelined: at most ``window`` of them unacknowledged."""
    credit = asyncio.Semaphore(window)

    async def read_acks() -> None:
        acks = 0
        while acks < count:
            if (await pub.recv(30))["type"] == "ack":
                acks += 1
                credit.release()

    reader = asyncio.create_task(read_acks())
    for i in range(count):
        await credit.acquire()
        await pub.send({"type": "publish", "channel": channel, "data": [i, payload]})
    await reader


async def test_slow_consumer_is_cut_off_while_a_fast_one_gets_everything(
    make_server: ServerFactory, write_path: tuple[str, ...]
) -> None:
    srv = make_server(*write_path)  # the default queue: 1024 frames
    channel = f"feed:{uuid.uuid4().hex[:6]}"
    slow_sock = socket.socket()
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_sock.connect(("127.0.0.1", srv.port))
    async with (
        connect(srv.url, "fast") as fast,
        connect(srv.url, "watcher") as watcher,
        connect(srv.url, "slow", sock=slow_sock, ping_interval=None) as slow,
        connect(srv.url, "publisher") as pub,
    ):
        for c in (fast, slow, watcher):
            await c.join(channel)
        slow.ws.transport.pause_reading()  # from here on, ``slow`` reads nothing
        fast_got: list[dict[str, Any]] = []

        async def read_fast() -> None:
            while len(fast_got) < 6000:
                frame = await fast.recv(30)
                if frame["type"] == "message":
                    fast_got.append(frame)

        reader = asyncio.create_task(read_fast())
        publishing = asyncio.create_task(publish_all(pub, channel, 6000))
        await wait_for_member_left(watcher, "slow", timeout=30)
        # ``slow`` reads again as soon as it is cut off (the node waits 5 s for the reply to its
        # close, however long the rest takes): what was flushed before the cut, then 4008.
        slow.ws.transport.resume_reading()
        received, closed = await read_until_closed(slow)
        await asyncio.gather(publishing, reader)
        assert [m["data"][0] for m in fast_got] == list(range(6000))
        assert [m["offset"] for m in fast_got] == list(range(1, 6001))
        assert closed.rcvd is not None
        assert closed.rcvd.code == 4008
        assert received < 6000
        presence = await watcher.request({"type": "presence", "channel": channel})
        assert {m["user"] for m in presence["members"]} == {"fast", "watcher"}


async def test_20_of_40_subscribers_reset_mid_broadcast(
    make_server: ServerFactory, write_path: tuple[str, ...]
) -> None:
    srv = make_server(*write_path)
    channel = f"fan:{uuid.uuid4().hex[:6]}"
    async with contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(connect(srv.url, f"s{i}", ping_interval=None))
            for i in range(40)
        ]
        pub = await stack.enter_async_context(connect(srv.url, "pub"))
        for s in subs:
            await s.join(channel)
        got: dict[int, list[int]] = {i: [] for i in range(20, 40)}

        async def read(i: int) -> None:
            while len(got[i]) < 500:
                frame = await subs[i].recv(30)
                if frame["type"] == "message":
                    got[i].append(frame["offset"])

        readers = [asyncio.create_task(read(i)) for i in range(20, 40)]

        async def vanish_midway() -> None:
            while min(len(v) for v in got.values()) < 200:
                await asyncio.sleep(0.005)
            for s in subs[:20]:
                reset(s)

        vanisher = asyncio.create_task(vanish_midway())
        await publish_all(pub, channel, 500, payload="m")
        await asyncio.gather(*readers, vanisher)
        for offsets in got.values():
            assert offsets == list(range(1, 501))
        expected = {f"s{i}" for i in range(20, 40)}
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # the reset peers are cleaned out of presence
            presence = await pub.request({"type": "presence", "channel": channel})
            if {m["user"] for m in presence["members"]} == expected:
                break
            assert asyncio.get_running_loop().time() < deadline, presence
            await asyncio.sleep(0.05)


async def test_a_reset_peer_is_cleaned_out_of_presence(make_server: ServerFactory) -> None:
    srv = make_server()
    async with connect(srv.url, "watcher") as watcher, connect(srv.url, "ghost") as ghost:
        await watcher.join("room")
        await ghost.join("room")
        await watcher.expect("member_joined")
        reset(ghost)
        await wait_for_member_left(watcher, "ghost", timeout=5)


async def test_a_silent_dead_peer_is_closed_by_the_heartbeat(make_server: ServerFactory) -> None:
    srv = make_server("--ping-interval", "0.5", "--ping-timeout", "0.5")
    async with (
        connect(srv.url, "watcher", ping_interval=None) as watcher,
        connect(srv.url, "zombie", ping_interval=None) as zombie,
    ):
        assert zombie.welcome["heartbeat"] == 0.5
        await watcher.join("room")
        await zombie.join("room")
        await watcher.expect("member_joined")
        # The zombie's process stops reading: no pong will ever come, but no FIN or RST either.
        zombie.ws.transport.pause_reading()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await wait_for_member_left(watcher, "zombie", timeout=10)
        assert loop.time() - started < 5
        # The watcher, answering pings, is still connected long after.
        await asyncio.sleep(1.5)
        assert (await watcher.request({"type": "ping"}))["type"] == "pong"
