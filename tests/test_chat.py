"""The seed-compatible plain-text chat at /ws/{client_id}, with a plain WebSocket client."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.support import ServerProcess


async def recv(ws: websockets.ClientConnection) -> str:
    text = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(text, str)
    return text


async def test_you_wrote_goes_to_the_writer_and_says_to_everyone(server: ServerProcess) -> None:
    async with (
        websockets.connect(f"{server.url}/ws/7") as seven,
        websockets.connect(f"{server.url}/ws/8") as eight,
    ):
        await asyncio.sleep(0.1)  # both are in the room before anyone speaks
        await seven.send("hello")
        assert await recv(seven) == "You wrote: hello"
        assert await recv(seven) == "Client #7 says: hello"
        assert await recv(eight) == "Client #7 says: hello"
        await eight.send("hi 7")
        assert await recv(eight) == "You wrote: hi 7"
        assert await recv(eight) == "Client #8 says: hi 7"
        assert await recv(seven) == "Client #8 says: hi 7"  # and not "You wrote"


async def test_leaving_is_announced_to_the_others(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.url}/ws/stay") as stay:
        async with websockets.connect(f"{server.url}/ws/go") as go:
            await go.send("bye")
            assert await recv(go) == "You wrote: bye"
            assert await recv(stay) == "Client #go says: bye"
        assert await recv(stay) == "Client #go left the chat"


async def test_chat_does_not_leak_into_protocol_channels(server: ServerProcess) -> None:
    from tests.support import connect

    async with connect(server.url, "json") as client, websockets.connect(f"{server.url}/ws/9") as c:
        await c.send("plain")
        assert await recv(c) == "You wrote: plain"
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        with pytest.raises(TimeoutError):
            await client.recv(timeout=0.3)


async def test_binary_frame_closes_with_1003(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.url}/ws/bin") as ws:
        await ws.send(b"\x00\x01")
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1003
