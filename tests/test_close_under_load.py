"""Closes are closes: a server's close frame reaches a client that is still sending.

When the server closes while the peer is mid-way through a large frame or a flood, closing
the socket with unread data makes the kernel answer with RST, and a RST can destroy the
close frame before the peer reads it: the peer sees 1006 and reconnects where it should stop.
Each case runs many rounds against a real ``wshub serve`` so that a close lost now and then
shows; a client sends, then reads, as a browser busy uploading does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator

import pytest
import websockets
from playwright.async_api import async_playwright
from websockets.frames import Close, Opcode

from tests.support import ServerProcess
from tests.test_browser import ARGS, CHROMIUM
from tests.test_transport_units import opened
from wshub import Hub, Settings

ROUNDS = 20
KEY = "close-under-load-key"
BIG = 2 * 1024 * 1024  # over the hard cap, which is 1 MiB with --max-frame-bytes 1000
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def node() -> Iterator[ServerProcess]:
    proc = ServerProcess("--max-frame-bytes", "1000", env={"WSHUB_API_KEY": KEY}).start()
    yield proc
    proc.stop()


def frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked with a zero key: the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 65_536:
        length = bytes([0x80 | 126]) + n.to_bytes(2)
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8)
    return bytes([0x80 | opcode]) + length + b"\0\0\0\0" + payload


class RawPeer:
    """A WebSocket client on a bare TCP socket: it sends what it is told, when it is told,
    and reads only once told to (a browser busy uploading reads its socket, but a client on
    a blocking socket may not)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._reading: asyncio.Task[None] | None = None
        self._data = bytearray()
        self.frames: list[tuple[int, bytes]] = []
        self.closed = asyncio.Event()
        """Set once the server's close frame is read."""
        self.reset: OSError | None = None
        """Set when the server reset the TCP connection under this peer."""

    def read(self) -> None:
        """Start reading, in the background, until the server's EOF."""
        if self._reading is None:
            self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while chunk := await self._reader.read(65_536):
                self._data += chunk
                self._parse()
        except OSError as exc:
            self.reset = exc

    def _parse(self) -> None:
        data, at = self._data, 0
        while len(data) - at >= 2:
            n, start = data[at + 1] & 0x7F, at + 2
            if n >= 126:
                start += 2 if n == 126 else 8
                n = int.from_bytes(data[at + 2 : start])
            if len(data) < start + n:
                break
            self.frames.append((data[at] & 0x0F, bytes(data[start : start + n])))
            at = start + n
            if self.frames[-1][0] == 0x8:
                self.closed.set()
        del data[:at]

    async def send(self, chunks: Iterable[bytes]) -> bool:
        """Send ``chunks`` as fast as the server takes them, until the server's close;
        True if that close came first."""
        try:
            for chunk in chunks:
                if self.closed.is_set():
                    return True  # as a browser: nothing more after the server's close
                self._writer.write(chunk)
                await self._writer.drain()
                await asyncio.sleep(0)  # drain() does not yield while the socket takes it all
        except OSError as exc:
            self.reset = exc
        return False

    async def close_code(self) -> int | None:
        """Read to the end, answering the server's close frame as RFC 6455 asks; its code."""
        self.read()
        assert self._reading is not None
        async with asyncio.timeout(5):
            await asyncio.wait(
                [self._reading, asyncio.ensure_future(self.closed.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            close = [payload for opcode, payload in self.frames if opcode == 0x8]
            if close and self.reset is None:
                with contextlib.suppress(OSError):
                    self._writer.write(frame(0x8, close[0][:2]))
                    self._writer.write_eof()
            await self._reading  # the server's EOF, or its RST
        return int.from_bytes(close[0][:2]) if close else None


@contextlib.asynccontextmanager
async def raw_peer(port: int, path: str) -> AsyncIterator[RawPeer]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 "), head
    peer = RawPeer(reader, writer)
    try:
        yield peer
    finally:
        writer.close()
        if peer._reading is not None:
            peer._reading.cancel()


async def test_a_frame_over_the_hard_cap_closes_with_1009_while_it_is_still_being_sent(
    node: ServerProcess,
) -> None:
    big = frame(0x1, b"x" * BIG)
    for round_ in range(ROUNDS):
        async with raw_peer(node.port, "/ws?user=big") as peer:
            await peer.send(big[i : i + CHUNK] for i in range(0, len(big), CHUNK))
            code = await peer.close_code()
            assert (code, peer.reset) == (1009, None), f"round {round_}"


async def test_the_websockets_library_sees_1009_while_it_sends_fragments(
    node: ServerProcess,
) -> None:
    async def fragments() -> AsyncIterator[str]:
        for _ in range(BIG // CHUNK):
            yield "x" * CHUNK
            await asyncio.sleep(0)  # as an application streaming its upload

    async def upload(ws: websockets.ClientConnection) -> None:
        await ws.send(fragments())
        await ws.recv()

    for round_ in range(ROUNDS):
        async with websockets.connect(f"{node.url}/ws?user=big", close_timeout=5) as ws:
            await ws.recv()  # welcome
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await upload(ws)
            assert closed.value.rcvd is not None, f"round {round_}: {closed.value!r}"
            assert closed.value.rcvd.code == 1009


async def test_chromium_sees_1009_for_a_frame_over_the_hard_cap(node: ServerProcess) -> None:
    script = """async ([url, rounds, size]) => {
      const big = 'x'.repeat(size);
      const codes = [];
      for (let i = 0; i < rounds; i++) {
        codes.push(await new Promise((resolve) => {
          const ws = new WebSocket(url);
          ws.onmessage = (e) => { if (JSON.parse(e.data).type === 'welcome') ws.send(big); };
          ws.onclose = (e) => resolve(e.code);
        }));
      }
      return codes;
    }"""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{node.http}/healthz")
            codes = await page.evaluate(script, [f"{node.url}/ws?user=big", 10, BIG])
        finally:
            await browser.close()
    assert codes == [1009] * 10


async def test_a_1008_reaches_a_client_that_floods(node: ServerProcess) -> None:
    """The operator's 1008 (the HTTP API) takes the same way out as the rate limit's."""
    # Each frame is over --max-frame-bytes: a flood of bytes that costs one small error each.
    large = frame(
        0x1, json.dumps({"type": "publish", "channel": "c", "data": "x" * 32_000}).encode()
    )
    for round_ in range(ROUNDS):
        user = f"flood{round_}"
        async with raw_peer(node.port, f"/ws?user={user}") as peer, asyncio.timeout(20):
            peer.read()  # it reads its replies, or it would be a slow consumer (4008)
            flood = asyncio.create_task(peer.send(itertools.repeat(large)))
            await asyncio.to_thread(disconnect, node, user)
            assert await flood, "the flood ended before the close"
            assert (await peer.close_code(), peer.reset) == (1008, None), f"round {round_}"


async def test_a_1003_on_the_chat_reaches_a_client_still_sending(node: ServerProcess) -> None:
    for round_ in range(ROUNDS):
        async with raw_peer(node.port, f"/ws/{round_}") as peer:
            peer.read()
            lines = itertools.repeat(frame(0x1, b"hello " * 10_000))
            assert await peer.send(itertools.chain([frame(0x2, b"\x00" * 100_000)], lines))
            assert (await peer.close_code(), peer.reset) == (1003, None), f"round {round_}"


def disconnect(node: ServerProcess, user: str) -> None:
    request = urllib.request.Request(
        f"{node.http}/api/disconnect",
        data=json.dumps({"user": user}).encode(),
        headers={"Authorization": f"apikey {KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 204


async def test_after_a_frame_over_the_cap_the_server_reads_on_until_the_close_timeout() -> None:
    """The half-closed connection does not linger: a peer that never finishes is cut off."""
    hub = Hub("memory://", Settings())
    await hub.start()
    try:
        session, _ = await opened(hub)
        protocol, transport = session.protocol, session.transport
        protocol.close_timeout = 0.2
        cap = session.config.ws_max_size
        header = b"\x81\xff" + (2 * cap).to_bytes(8) + b"\0\0\0\0"
        protocol.data_received(header + b"x" * 100_000)
        closes = [f for f in session.received() if f.opcode is Opcode.CLOSE]
        assert [Close.parse(bytes(f.data)).code for f in closes] == [1009]
        assert transport.eof_written  # the close frame, then FIN
        assert not transport.is_closing() and not transport.reading_paused
        protocol.data_received(b"x" * 100_000)  # the rest of the frame: read and dropped
        assert not transport.is_closing()
        await asyncio.wait_for(transport.aborted.wait(), 3)
    finally:
        await hub.stop()
