"""The fast path (pre-built frames written to the transport) against the plain ASGI path.

Both must put the same frames on the wire, in the same order, with the same slow-consumer
behaviour (the delivery tests in test_delivery.py run on both paths too).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from tests.conftest import ServerFactory
from tests.support import Client, connect
from wshub.protocol.wire import SharedFrame, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_is_what_websockets_would_send(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    expected = WsFrame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def test_frame_wire_bytes_are_built_once() -> None:
    frame = SharedFrame('{"type":"pong"}')
    assert frame.wire is frame.wire
    assert frame.wire == text_frame(b'{"type":"pong"}')


def normalized(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames without the values that differ from run to run (times, sessions, epochs)."""
    volatile = {"ts", "session", "epoch", "server"}
    return [
        {k: normalized(v) if k == "messages" else v for k, v in f.items() if k not in volatile}
        for f in frames
    ]


async def scripted_session(url: str) -> list[dict[str, Any]]:
    """Everything two clients see during one fixed exchange."""
    seen: list[dict[str, Any]] = []
    async with connect(url, "ann") as ann, connect(url, "bob") as bob:
        await ann.join("room", meta={"n": 1})
        await bob.join("room")
        for i in range(50):
            await bob.send({"type": "publish", "channel": "room", "data": {"i": i, "s": "é" * i}})
        await bob.send({"type": "send", "to": "ann", "data": [1, 2]})
        await bob.send({"type": "history", "channel": "room", "limit": 5})
        await bob.send({"type": "presence", "channel": "room"})
        await bob.send('{"type": "dance"}')
        await bob.send({"type": "ping", "id": "last"})
        for client, until in ((bob, {"type": "pong", "id": "last"}), (ann, None)):
            seen.extend(await read_until(client, until, expect=52 if until is None else 0))
    return seen


async def read_until(
    client: Client, last: dict[str, Any] | None, expect: int = 0
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = await client.recv(10)
        frames.append(frame)
        if frame == last or (last is None and len(frames) >= expect):
            return frames


async def test_both_paths_put_the_same_frames_on_the_wire(make_server: ServerFactory) -> None:
    fast = make_server()
    asgi = make_server("--no-fast-path")
    a, b = await asyncio.gather(scripted_session(fast.url), scripted_session(asgi.url))
    assert normalized(a) == normalized(b)
    messages = [f for f in a if f["type"] == "message" and f["from"] == "bob"]
    assert [m["offset"] for m in messages][:50] == list(range(1, 51))
