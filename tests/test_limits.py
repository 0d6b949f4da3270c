"""Limits refuse the way docs/protocol.md says, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import ServerFactory
from tests.support import connect


async def attempt(url: str) -> ClientConnection | int:
    """Open a connection; the HTTP status if the handshake is refused."""
    try:
        return await websockets.connect(url, open_timeout=10)
    except websockets.InvalidStatus as exc:
        assert exc.response.headers["Retry-After"] == "1"
        return exc.response.status_code


async def test_60_concurrent_connects_against_a_cap_of_10_admit_exactly_10(
    make_server: ServerFactory,
) -> None:
    srv = make_server("--max-connections", "10")
    results = await asyncio.gather(*(attempt(f"{srv.url}/ws") for _ in range(60)))
    admitted = [r for r in results if not isinstance(r, int)]
    refused = [r for r in results if isinstance(r, int)]
    try:
        assert len(admitted) == 10
        assert refused == [503] * 50
        for ws in admitted:  # the admitted ones are fully usable
            assert json.loads(await ws.recv())["type"] == "welcome"
        # The plain-text chat shares the node's cap.
        assert await attempt(f"{srv.url}/ws/7") == 503
    finally:
        for ws in admitted:
            await ws.close()
    # Closed connections give their places back.
    deadline = asyncio.get_running_loop().time() + 5
    while isinstance(again := await attempt(f"{srv.url}/ws"), int):
        assert asyncio.get_running_loop().time() < deadline, "the places were not given back"
        await asyncio.sleep(0.05)
    await again.close()


async def test_per_user_cap_from_the_environment(make_server: ServerFactory) -> None:
    srv = make_server(WSHUB_MAX_CONNECTIONS_PER_USER="2")
    async with connect(srv.url, "eve"), connect(srv.url, "eve"):
        assert await attempt(f"{srv.url}/ws?user=eve") == 503
        other = await attempt(f"{srv.url}/ws?user=frank")
        assert not isinstance(other, int)
        await other.close()


async def test_frame_size_limits(make_server: ServerFactory) -> None:
    srv = make_server("--max-frame-bytes", "1000")  # hard cap: 1 MiB
    async with connect(srv.url) as a:
        ok = {"type": "publish", "channel": "c", "data": "x" * 900}
        assert (await a.request(ok))["type"] == "ack"
        await a.send({"type": "publish", "channel": "c", "data": "x" * 5000, "id": 1})
        assert (await a.expect("error"))["code"] == "too_large"
        await a.send({"type": "publish", "channel": "c", "data": "x" * 900_000})
        assert (await a.expect("error"))["code"] == "too_large"
        assert (await a.request({"type": "ping"}))["type"] == "pong"
        await a.send("x" * (1024 * 1024 + 10))
        with pytest.raises(websockets.ConnectionClosed) as info:
            await a.recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1009


async def test_rate_limit(make_server: ServerFactory) -> None:
    srv = make_server("--rate-limit", "5")
    async with connect(srv.url) as a:
        for n in range(20):
            await a.send({"type": "ping", "id": n})
        # Rejected frames are answered once a second at most, so probe until the backlog and
        # its debt are through and a probe gets its pong.
        replies: list[dict[str, object]] = []
        for probe in range(20):
            await a.send({"type": "ping", "id": f"probe{probe}"})
            with contextlib.suppress(TimeoutError):
                while replies[-1:] != [{"type": "pong", "id": f"probe{probe}"}]:
                    replies.append(await a.recv(timeout=1))
                break
        assert replies[-1]["type"] == "pong", replies
        pongs = [r for r in replies if r["type"] == "pong" and isinstance(r.get("id"), int)]
        limited = [r for r in replies if r.get("code") == "rate_limited"]
        assert 5 <= len(pongs) <= 7, replies
        # Fifteen or so frames rejected; one error a second at most, not one per frame.
        assert 1 <= len(limited) <= 6, replies


async def test_channel_limit(make_server: ServerFactory) -> None:
    srv = make_server("--max-channels", "3")
    async with connect(srv.url) as a:
        for name in ("a", "b", "c", "c"):
            await a.join(name)
        err = await a.request({"type": "join", "channel": "d"})
        assert (err["type"], err["code"]) == ("error", "limit")
        await a.request({"type": "leave", "channel": "a"})
        await a.join("d")


async def test_refused_handshake_never_upgrades(make_server: ServerFactory) -> None:
    srv = make_server("--max-connections", "1")
    async with connect(srv.url):
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert head.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 1" in head.lower()
