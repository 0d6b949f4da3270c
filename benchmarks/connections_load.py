"""The load side of ``benchmarks.connections``: bare WebSocket receivers and publishers.

A receiver is an asyncio protocol, not a library client: a hand-made handshake, masked frames
with a zero key, and a frame reader just big enough to answer pings and closes, so that the
generator costs less per connection than the server it measures. One generator process holds
its share of the receivers (under the open-files limit), each socket bound to one of its own
loopback source addresses before it connects, with ``IP_BIND_ADDRESS_NO_PORT`` so that the
kernel picks the port at ``connect()`` from the whole (source, destination) port space.

A generator talks to the parent through a pipe: ``ready``, then ``go`` (connect everything),
then any number of ``("round", n)`` (note when round ``n``'s message reaches each receiver),
then ``done``. Times are ``time.monotonic()``: on Linux one clock for every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # any 16 bytes, base64: the server checks its form only
BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+
ATTEMPTS = 4
"""Tries per connection: a refusal (503 from a full worker) or a reset is retried, as a
client's reconnect would be, and counted."""
ROUND_TIMEOUT = 60.0
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def masked(payload: bytes, opcode: int = TEXT) -> bytes:
    """A client frame, masked with a zero key (the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 65536:
        length = bytes([0x80 | 126]) + n.to_bytes(2)
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8)
    return bytes([0x80 | opcode]) + length + b"\0\0\0\0" + payload


def split_frames(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete server frames (unmasked) at the front of ``buffer``, and what is left."""
    frames: list[tuple[int, bytes]] = []
    at, end = 0, len(buffer)
    while end - at >= 2:
        opcode, n = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
        head = 2
        if n == 126:
            if end - at < 4:
                break
            n, head = int.from_bytes(buffer[at + 2 : at + 4]), 4
        elif n == 127:
            if end - at < 10:
                break
            n, head = int.from_bytes(buffer[at + 2 : at + 10]), 10
        if end - at < head + n:
            break
        frames.append((opcode, buffer[at + head : at + head + n]))
        at += head + n
    return frames, buffer[at:]


def channel_name(i: int, channels: int) -> str:
    """Connection ``i``'s channel: round-robin, so every channel has members on every worker."""
    return f"cb-{i % channels}"


def source_address(index: int) -> str:
    """The ``index``-th load-generator source address: 127.0.0.2 and up (all of 127/8 is lo)."""
    n = 2 + index
    return f"127.0.{n // 256}.{n % 256}"


def handshake(user: str) -> bytes:
    return (
        f"GET /ws?user={user} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@dataclass
class Tally:
    """What one generator saw; sent to the parent as a dict."""

    connected: int = 0
    failed: int = 0
    retries: int = 0
    refused: int = 0
    dropped: int = 0
    round: int = -1
    arrivals: list[float] = field(default_factory=list)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        """Every receiver still open has this round's message."""
        if len(self.arrivals) >= self.connected - self.dropped:
            self.complete.set()


HEAD, JOINING, JOINED, FAILED = range(4)


class Receiver(asyncio.Protocol):
    """One subscriber: handshake, ``join``, then it notes each round's message."""

    __slots__ = ("join", "joined", "request", "rest", "state", "tally", "transport")

    def __init__(self, request: bytes, join: bytes, tally: Tally) -> None:
        self.request = request
        self.join = join
        self.tally = tally
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.rest = b""
        self.state = HEAD
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)
        self.request = b""

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.rest + data if self.rest else data
        if self.state == HEAD:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.rest = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.tally.refused += 1
                self._fail("refused: " + buffer[: buffer.find(b"\r\n")].decode("latin-1"))
                return
            # Frames only after the 101: a server may drop what came with the request.
            self.state = JOINING
            buffer = buffer[end + 4 :]
            assert self.transport is not None
            self.transport.write(self.join)
            self.join = b""
        frames, self.rest = split_frames(buffer)
        for opcode, payload in frames:
            if opcode == TEXT:
                self._text(payload, now)
            elif opcode == PING and self.transport is not None:
                self.transport.write(masked(payload, PONG))
            elif opcode == CLOSE and self.transport is not None:
                self.transport.write(masked(payload[:2], CLOSE))
                self.transport.close()

    def _text(self, payload: bytes, now: float) -> None:
        if self.state == JOINING:
            if b'"type":"joined"' in payload:
                self.state = JOINED
                self.joined.set_result(None)
            elif b'"type":"error"' in payload:
                self._fail(payload.decode())
        elif b'"type":"message"' in payload and json.loads(payload)["data"] == self.tally.round:
            tally = self.tally
            tally.arrivals.append(now)
            tally.check()

    def _fail(self, why: str) -> None:
        self.state = FAILED
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == JOINED:
            self.tally.dropped += 1
            self.tally.check()
        elif not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joined"))


async def _open(port: int, source: str, receiver: Receiver) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.create_connection(lambda: receiver, sock=sock)
    except BaseException:
        sock.close()
        raise
    await receiver.joined


@dataclass(frozen=True)
class Share:
    """One generator's part of the run."""

    port: int
    first: int
    count: int
    sources: list[str]
    concurrency: int
    channels: int


async def _connect_all(share: Share, tally: Tally, receivers: list[Receiver]) -> None:
    gate = asyncio.Semaphore(share.concurrency)

    async def one(i: int) -> None:
        join = masked(
            b'{"type":"join","id":1,"channel":"%s"}' % channel_name(i, share.channels).encode()
        )
        source = share.sources[i % len(share.sources)]
        for attempt in range(ATTEMPTS):
            receiver = Receiver(handshake(f"c{i}"), join, tally)
            async with gate:
                try:
                    await asyncio.wait_for(_open(share.port, source, receiver), 30)
                    receivers.append(receiver)
                    tally.connected += 1
                    return
                except (OSError, TimeoutError, ConnectionError):
                    receiver.joined.cancel()  # nobody waits for it any more
                    if receiver.transport is not None:
                        receiver.transport.abort()
            if attempt + 1 < ATTEMPTS:
                tally.retries += 1
                await asyncio.sleep(random.uniform(0.1, 0.5) * 2**attempt)  # a client's backoff
        tally.failed += 1

    await asyncio.gather(*(one(i) for i in range(share.first, share.first + share.count)))


async def _generate(share: Share, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    tally = Tally()
    receivers: list[Receiver] = []
    pipe.send("ready")
    await loop.run_in_executor(None, pipe.recv)  # go
    cpu, started, rss = time.process_time(), time.monotonic(), _rss_kb()
    await _connect_all(share, tally, receivers)
    pipe.send(
        {
            "connected": tally.connected,
            "failed": tally.failed,
            "retries": tally.retries,
            "refused": tally.refused,
            "started": started,
            "finished": time.monotonic(),
            "cpu_seconds": time.process_time() - cpu,
            "rss_grown_kb": _rss_kb() - rss,
        }
    )
    while (order := await loop.run_in_executor(None, pipe.recv)) != "done":
        tally.round, tally.arrivals = int(order[1]), []
        tally.complete = asyncio.Event()
        cpu = time.process_time()
        pipe.send("listening")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.complete.wait(), ROUND_TIMEOUT)
        pipe.send(
            {
                "arrivals": tally.arrivals,
                "cpu_seconds": time.process_time() - cpu,
                "dropped": tally.dropped,
            }
        )
    for receiver in receivers:
        if receiver.transport is not None:
            receiver.transport.abort()


def _rss_kb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_KB


def generator(share: Share, pipe: Connection) -> None:
    """A load-generator process's body; uvloop when it is there (it is, with uvicorn's extra)."""
    try:
        import uvloop

        uvloop.run(_generate(share, pipe))
    except ImportError:
        asyncio.run(_generate(share, pipe))


class Publisher:
    """One blocking connection that writes a round's publications at once and reads the acks
    (it answers the server's pings while it reads)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ROUND_TIMEOUT)
        self.sock.sendall(handshake("publisher"))
        self.rest = b""
        while b"\r\n\r\n" not in self.rest:
            self.rest += self._recv()
        head, _, self.rest = self.rest.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"publisher refused: {head[:40]!r}")
        self._texts(1)  # welcome

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("publisher closed by the server")
        return data

    def _texts(self, count: int) -> list[bytes]:
        texts: list[bytes] = []
        while True:
            frames, self.rest = split_frames(self.rest)
            for opcode, payload in frames:
                if opcode == PING:
                    self.sock.sendall(masked(payload, PONG))
                elif opcode == TEXT:
                    texts.append(payload)
            if len(texts) >= count:
                return texts
            self.rest += self._recv()

    def write(self, frames: bytes) -> None:
        self.sock.sendall(frames)

    def acks(self, count: int) -> None:
        """Read until ``count`` acks have come; an error frame is an error."""
        for text in self._texts(count):
            if b'"type":"ack"' not in text:
                raise RuntimeError(f"a publication was not acked: {text.decode()}")

    def close(self) -> None:
        self.sock.close()


def publications(channels: list[str], round_: int) -> bytes:
    """One ``publish`` to each channel, framed, for one write; ``data`` is the round."""
    return b"".join(
        masked(json.dumps({"type": "publish", "id": n, "channel": c, "data": round_}).encode())
        for n, c in enumerate(channels)
    )
