"""The close table (docs/protocol.md, "Close codes") on connections identified the version 2
way, by their ``auth`` frame, with a client that is not ours (the ``websockets`` library), on
real ``wshub serve`` processes. The server never closes with 1000 on its own (it answers a
client's 1000 with 1000); 1009 while waiting for auth is in tests/test_identity_matrix.py,
4001 and 4003 in tests/test_identity.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time

import pytest
import websockets

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, authed, close_code, still_usable, token, unique
from tests.proxy import TcpProxy
from tests.support import Client, Frame, RedisProcess
from tests.test_delivery import publish_all, read_until_closed, wait_for_member_left

ENV = {"WSHUB_JWT_SECRET": SECRET}


@pytest.mark.slow
async def test_a_drain_closes_an_identified_connection_with_1001(
    make_server: ServerFactory,
) -> None:
    draining = make_server("--drain-seconds", "1", **ENV)
    async with authed(draining.url, token("ann", join=["chat:*"])) as c:
        await c.join("chat:a")
        assert draining.proc is not None
        draining.proc.send_signal(signal.SIGTERM)
        assert await close_code(c) == 1001
        assert c.ws.close_reason == "server draining: reconnect"


@pytest.mark.slow
async def test_ten_seconds_of_flooding_close_an_identified_connection_with_1008(
    make_server: ServerFactory,
) -> None:
    limited = make_server("--rate-limit", "5", **ENV)
    async with authed(limited.url, token("ann")) as c:

        async def flood() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await c.send({"type": "ping"})
                    await asyncio.sleep(0.005)

        started = time.monotonic()
        flooding = asyncio.create_task(flood())
        assert await close_code(c, timeout=30) == 1008
        assert c.ws.close_reason == "rate limit exceeded repeatedly"
        assert time.monotonic() - started >= 10
        await flooding
    async with authed(limited.url, token("ann")) as again:  # not banned: a new connection works
        await still_usable(again)


async def test_an_identified_slow_consumer_is_closed_with_4008(make_server: ServerFactory) -> None:
    small = make_server("--queue-size", "64", **ENV)
    channel = unique("feed:")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", small.port))
    async with (
        authed(small.url, token("slow", join=["feed:*"]), sock=sock, ping_interval=None) as slow,
        authed(small.url, token("watcher", join=["feed:*"])) as watcher,
        authed(small.url, token("pub", publish=["*"])) as pub,
    ):
        await slow.join(channel)
        await watcher.join(channel)
        slow.ws.transport.pause_reading()  # from here on, slow reads nothing
        # 6 MB: more than the kernel's socket buffers hold, as in tests/test_delivery.py.
        publishing = asyncio.create_task(publish_all(pub, channel, 6000))
        await wait_for_member_left(watcher, "slow", timeout=30)
        slow.ws.transport.resume_reading()
        _, closed = await read_until_closed(slow)
        await publishing
        assert closed.rcvd is not None and closed.rcvd.code == 4008


async def join_once_available(client: Client, channel: str, timeout: float = 20.0) -> Frame:
    """Join as a client should: on ``unavailable`` (the node's first Redis call through the
    proxy can outlast --broker-timeout on a loaded machine), again, until it is joined."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.request({"type": "join", "channel": channel})
        if reply["type"] == "joined" or reply.get("code") != "unavailable":
            assert reply["type"] == "joined", reply
            return reply
        assert time.monotonic() < deadline, reply
        await asyncio.sleep(0.2)  # the client's backoff before it asks again


@pytest.mark.slow
async def test_a_gap_history_no_longer_holds_closes_an_identified_connection_with_1011(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    proxy = await TcpProxy(redis.port).start()
    flags = ("--broker-timeout", "2", "--history-size", "2")
    behind = make_server("--broker", f"redis://127.0.0.1:{proxy.port}/0", *flags, **ENV)
    direct = make_server("--broker", redis.url, *flags, **ENV)
    channel = unique("feed:")
    try:
        async with (
            authed(behind.url, token("sub", join=["feed:*"])) as sub,
            authed(direct.url, token("pub", publish=["*"])) as pub,
        ):
            joined = await join_once_available(sub, channel)
            await pub.publish(channel, 0)
            (first,) = await sub.messages(1)
            proxy.sever()  # the node behind the proxy hears nothing more, and is not told
            for i in range(1, 6):  # five more while it is deaf; history keeps the last two
                await pub.publish(channel, i)
            # Found within the broker timeout; the gap (offsets 2 to 4) cannot be filled.
            assert await close_code(sub, timeout=20) == 1011
            assert sub.ws.close_reason == "missed messages: rejoin"
        async with authed(behind.url, token("sub", join=["feed:*"])) as again:
            since = {"offset": first["offset"], "epoch": joined["epoch"]}
            assert (await again.join(channel, since=since))["recovered"] is False
    finally:
        await proxy.close()
