"""Issue 11's scenarios about what a node holds for a peer that reads slowly or not at all.

Items 2 to 4 of the issue: replies queued for a client that never reads (``history`` and
``presence``), the fast path's buffers for consumers that pause, and WebSocket ping frames (a
flood while reading, and pings that are never read). The attackers speak WebSocket over raw
sockets, because a library client reads into its own buffers and would hide what "never
reads" means. Run through ``benchmarks.abuse``, which starts the node and the neighbours.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import time
from collections import Counter
from typing import Any

import websockets

PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked frame, as a client must send it (RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def text(frame: dict[str, Any]) -> bytes:
    return client_frame(TEXT, json.dumps(frame).encode())


async def raw_client(port: int, user: str) -> Conn:
    """A WebSocket opened by hand: handshake read, nothing else (the welcome stays unread)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws?user={user} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if not head.startswith(b"HTTP/1.1 101"):
        raise OSError(head.split(b"\r\n")[0].decode())
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


async def drain(reader: asyncio.StreamReader, seconds: float) -> str:
    """Reads what the node sent for at most ``seconds``: its close code, or "open"."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            opcode, payload = await asyncio.wait_for(read_frame(reader), left)
            if opcode == CLOSE:
                return str(struct.unpack("!H", payload[:2])[0]) if payload else "close"
    except TimeoutError:
        return "open"
    except (OSError, asyncio.IncompleteReadError):
        return "cut off (no close frame)"
    return "open"


async def reading_client(port: int, user: str) -> Any:
    """A library client whose frames are read and dropped, so that it is never slow."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?user={user}", max_size=None)
    await ws.recv()

    async def discard() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass

    ws.discard = asyncio.create_task(discard())  # type: ignore[attr-defined]
    return ws


# --- item 2: replies to a client that never reads ---------------------------------------------


async def _never_reads_then(
    port: int, channel: str, request: str, count: int, seconds: float
) -> dict[str, Any]:
    reader, writer = await raw_client(port, "nonreader")
    writer.write(text({"type": "join", "channel": channel}))
    started = time.monotonic()
    for n in range(count):
        writer.write(text({"type": request, "channel": channel, "id": n}))
    await writer.drain()
    await asyncio.sleep(max(0.0, seconds - 4 - (time.monotonic() - started)))
    closed = await drain(reader, 3)
    writer.close()
    return {
        "requests": count,
        "frame_bytes": len(json.dumps({"type": request, "channel": channel, "id": 100})),
        "closed": closed,
    }


async def attack_history_flood(port: int, seconds: float) -> dict[str, Any]:
    publisher = await reading_client(port, "historian")
    data = "h" * 60_000
    for _ in range(100):  # history_size: the channel's history is full
        await publisher.send(json.dumps({"type": "publish", "channel": "hist", "data": data}))
    await publisher.send(json.dumps({"type": "presence", "channel": "hist", "id": "sync"}))
    await asyncio.sleep(1)  # the publishes are acked in the background
    result = await _never_reads_then(port, "hist", "history", 150, seconds - 1)
    await publisher.close()
    return {**result, "history": "100 messages of 60 KB"}


async def largest_meta(port: int) -> int:
    """The largest ``meta`` blob this node accepts in a join (60 KB, or what its limit lets)."""
    ws = await reading_client(port, "prober")
    ws.discard.cancel()
    try:
        for size in (60_000, 1_013, 1_000, 900, 500, 100):
            frame = {"type": "join", "channel": f"probe{size}", "meta": {"b": "m" * size}, "id": 1}
            await ws.send(json.dumps(frame))
            while (reply := json.loads(await ws.recv())).get("id") != 1:
                pass
            if reply["type"] == "joined":
                return size
        return 0
    finally:
        await ws.close()


async def attack_presence_flood(port: int, seconds: float) -> dict[str, Any]:
    started = time.monotonic()
    size = await largest_meta(port)
    members = []
    for n in range(150):
        ws = await reading_client(port, f"member{n}")
        frame = {"type": "join", "channel": "pres", "meta": {"b": "m" * size}, "id": "j"}
        await ws.send(json.dumps(frame))
        members.append(ws)
    await asyncio.sleep(1)
    setup = time.monotonic() - started
    left = seconds - setup
    result = await _never_reads_then(port, "pres", "presence", 100, max(left, 5))
    for ws in members:
        await ws.close()
    return {
        **result,
        "members": 150,
        "meta_bytes": size + 10,
        "setup_s": round(setup, 1),
    }


# --- item 3: the fast path's buffers ----------------------------------------------------------


async def publish_for(port: int, channel: str, size: int, rate: float, seconds: float) -> int:
    publisher = await reading_client(port, "publisher")
    frame = json.dumps({"type": "publish", "channel": channel, "data": "p" * size})
    sent, started = 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        if sent < elapsed * rate:
            await publisher.send(frame)
            sent += 1
        else:
            await asyncio.sleep(1 / rate)
    await publisher.close()
    return sent


async def attack_fast_pause(port: int, seconds: float) -> dict[str, Any]:
    cut_off = 0
    received = 0

    async def consumer(n: int) -> None:
        nonlocal cut_off, received
        reader, writer = await raw_client(port, f"pauser{n}")
        writer.write(text({"type": "join", "channel": "fast"}))
        try:
            while True:
                await asyncio.sleep(16)  # pause
                until = time.monotonic() + 0.3
                while (left := until - time.monotonic()) > 0:
                    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                        chunk = await asyncio.wait_for(reader.read(65536), left)
                        if not chunk:
                            cut_off += 1
                            return
                        received += len(chunk)
        finally:
            writer.close()

    consumers = [asyncio.create_task(consumer(n)) for n in range(20)]
    await asyncio.sleep(1)
    sent = await publish_for(port, "fast", 60_000, 60, seconds - 2)
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return {
        "published": sent,
        "consumers": 20,
        "cut_off": cut_off,
        "read_mb": round(received / 2**20, 1),
    }


async def attack_idle_consumers(port: int, seconds: float) -> dict[str, Any]:
    conns: list[Conn] = []
    started = time.monotonic()
    for start in range(0, 2000, 100):
        batch = await asyncio.gather(
            *(raw_client(port, f"idle{n}") for n in range(start, start + 100)),
            return_exceptions=True,
        )
        conns += [c for c in batch if not isinstance(c, BaseException)]
    for _, writer in conns:
        writer.write(text({"type": "join", "channel": "idle"}))
    await asyncio.sleep(1)
    left = seconds - 5 - (time.monotonic() - started)
    sent = await publish_for(port, "idle", 1_000, 200, max(left, 5))
    closed = await asyncio.gather(*(drain(r, 2) for r, _ in conns))
    for _, writer in conns:
        writer.close()
    return {"consumers": len(conns), "published": sent, "closed_by_node": dict(Counter(closed))}


# --- item 4: WebSocket pings ------------------------------------------------------------------


async def attack_ping_flood(port: int, seconds: float) -> dict[str, Any]:
    reader, writer = await raw_client(port, "pinger")
    counts: Counter[str] = Counter()
    close = "open"

    async def read() -> None:
        nonlocal close
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == PONG:
                    counts["pong"] += 1
                elif opcode == CLOSE:
                    close = str(struct.unpack("!H", payload[:2])[0]) if payload else "close"
                    return
                elif opcode == TEXT:
                    counts[json.loads(payload).get("code") or "text"] += 1
                else:  # the server's own keepalive pings
                    counts[f"opcode {opcode}"] += 1
        close = "cut off (no close frame)" if close == "open" else close

    reading = asyncio.create_task(read())
    ping = client_frame(PING, b"p")
    sent, started = 0, time.monotonic()
    with contextlib.suppress(OSError):
        while time.monotonic() - started < seconds and not reading.done():
            writer.write(ping * 1000)
            await writer.drain()
            sent += 1000
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(reading), 2)
    reading.cancel()
    writer.close()
    return {
        "pings_sent": sent,
        "replies": dict(counts),
        "closed": close,
        "after_s": round(time.monotonic() - started, 1),
    }


async def attack_ping_noread(port: int, seconds: float) -> dict[str, Any]:
    reader, writer = await raw_client(port, "deafpinger")
    ping = client_frame(PING, b"p" * 100)
    sent, started = 0, time.monotonic()
    with contextlib.suppress(OSError, TimeoutError, asyncio.TimeoutError):
        while time.monotonic() - started < seconds - 3:
            writer.write(ping * 1000)
            await asyncio.wait_for(writer.drain(), 5)
            sent += len(ping) * 1000
    closed = await drain(reader, 3)
    writer.close()
    return {"sent_mb": round(sent / 2**20, 1), "closed": closed}
