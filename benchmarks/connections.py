"""Many connections on one machine: RSS per connection, connect rate, one publication's reach.

``make bench-connections`` runs two scenarios against real ``wshub serve`` processes:

- one process (``--workers 1``) with 19,000 connections (one process may open 20,000 files on
  the machines this was written for: a hard limit);
- ``--workers 6`` on a Redis started for the run, with 100,000 connections.

The connections come from several load-generator processes, each under the open-files limit
and bound to its own loopback source addresses (127.0.0.2 and up: one source address has only
the ephemeral port range, about 28,000 ports, towards one server port). Each connection is a
bare asyncio protocol (a hand-made handshake and masked frames: a library client would cost
the generator more than the server), joins one channel, and waits. Then one publication goes
to that channel, and every receiver notes when it arrives.

Reported: the server's RSS growth per connection (per worker, from the sockets each worker
holds, and in total), the connect rate (connections opened and joined per second, all
generators together), and the time from the publish to the last receiver.

    python -m benchmarks.connections --connections 19000 --workers 1
    python -m benchmarks.connections --connections 100000 --workers 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path

from wshub.bench.procstat import rss_bytes

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "conn-bench"
PER_SOURCE = 20_000
"""Connections from one source address (its ephemeral ports are about 28,000)."""
PER_PROCESS = 18_000
"""Connections per load-generator process: under the 20,000 open-files hard limit."""
CONCURRENT = 256
"""Handshakes in flight per generator process."""
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # any 16 bytes, base64: the server checks its form only


def masked(payload: bytes) -> bytes:
    """A client text frame, masked with a zero key (the payload goes as it is)."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2)
    return b"\x81" + length + b"\0\0\0\0" + payload


class Receiver(asyncio.Protocol):
    """One idle subscriber: handshake, ``join``, then it waits for the one message."""

    def __init__(self, request: bytes, joined: asyncio.Future[None], arrived: list[float]) -> None:
        self.request = request
        self.joined = joined
        self.arrived = arrived
        self.seen = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.joined.done():
            self.seen += data
            if not self.upgraded and b"\r\n\r\n" in self.seen:
                # Frames only after the 101: a server may drop what came with the request.
                self.upgraded = True
                assert self.transport is not None
                self.transport.write(masked(b'{"type":"join","channel":"%s"}' % CHANNEL.encode()))
            if b'"type":"joined"' in self.seen:
                self.seen = b""
                self.joined.set_result(None)
        elif b'"type":"message"' in data:
            self.arrived.append(time.time())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joined"))


async def _generate(port: int, first: int, count: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    arrived: list[float] = []
    gate = asyncio.Semaphore(CONCURRENT)
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        source = f"127.0.{2 + i // PER_SOURCE // 250}.{2 + (i // PER_SOURCE) % 250}"
        request = (
            f"GET /ws?user=c{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with gate:
            joined: asyncio.Future[None] = loop.create_future()
            try:
                await loop.create_connection(
                    lambda: Receiver(request, joined, arrived),
                    "127.0.0.1",
                    port,
                    local_addr=(source, 0),
                )
                await asyncio.wait_for(joined, 60)
            except (OSError, TimeoutError, ConnectionError):
                failures += 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    pipe.send({"connected": count - failures, "seconds": time.monotonic() - started})
    await loop.run_in_executor(None, pipe.recv)  # the publication was sent
    deadline = time.monotonic() + 60
    while len(arrived) < count - failures and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    pipe.send({"received": len(arrived), "last": max(arrived, default=0.0)})
    await loop.run_in_executor(None, pipe.recv)  # done: close everything by exiting


def generator(port: int, first: int, count: int, pipe: Connection) -> None:
    asyncio.run(_generate(port, first, count, pipe))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _until_ready(port: int, workers: int) -> None:
    """/readyz answers 200 (broker connected) several times in a row: every worker is up."""
    deadline = time.monotonic() + 120
    in_a_row = 0
    while in_a_row < 4 * workers:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                in_a_row = in_a_row + 1 if resp.status == 200 else 0
        except OSError:
            in_a_row = 0
            time.sleep(0.2)


def _workers(pid: int, expected: int) -> list[int]:
    """The serving processes: the supervisor's children with --workers, else the process."""
    if expected <= 1:
        return [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(c)
        for c in children
        if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
    ]


def _sockets(pid: int) -> int:
    fd = Path(f"/proc/{pid}/fd")
    count = 0
    for entry in fd.iterdir():
        try:
            count += os.readlink(entry).startswith("socket:")
        except OSError:
            continue
    return count


def run(args: argparse.Namespace) -> dict[str, object]:
    port = _free_port()
    redis: subprocess.Popen[bytes] | None = None
    flags = ["--max-connections", str(args.connections + 1000), "--log-level", "warning"]
    flags += ["--max-connections-per-user", "0", "--ping-interval", "60"]
    if args.workers > 1:
        redis_port = _free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        flags += ["--workers", str(args.workers), "--broker", f"redis://127.0.0.1:{redis_port}/0"]
    log = tempfile.NamedTemporaryFile(prefix="bench-connections-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "wshub", "serve", "--port", str(port), *flags],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "WSHUB_DRAIN_SECONDS": "0"},
    )
    try:
        return _measure(args, port, server.pid)
    finally:
        server.terminate()
        server.wait(60)
        if redis is not None:
            redis.terminate()
            redis.wait(10)


def _measure(args: argparse.Namespace, port: int, server: int) -> dict[str, object]:
    _until_ready(port, args.workers)
    _say("server up")
    workers = _workers(server, args.workers)
    before = {w: rss_bytes(w) for w in workers}
    ctx = multiprocessing.get_context("spawn")
    shares = [
        (i, min(PER_PROCESS, args.connections - i)) for i in range(0, args.connections, PER_PROCESS)
    ]
    pipes, procs = [], []
    started = time.monotonic()
    for first, count in shares:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=generator, args=(port, first, count, theirs))
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    connected = [pipe.recv() for pipe in pipes]
    _say(f"{sum(int(c['connected']) for c in connected)} connected")
    connect_seconds = time.monotonic() - started
    total = sum(int(c["connected"]) for c in connected)
    time.sleep(args.settle)
    after = {w: rss_bytes(w) for w in workers}
    held = {w: _sockets(w) for w in workers}
    published = _publish(port)
    for pipe in pipes:
        pipe.send("published")
    reached = [pipe.recv() for pipe in pipes]
    for pipe in pipes:
        pipe.send("done")
    for proc in procs:
        proc.join(60)
    _say("published; reached")
    received = sum(int(r["received"]) for r in reached)
    last = max(float(r["last"]) for r in reached)
    grown = sum(after[w] - before[w] for w in workers)
    return {
        "connections": args.connections,
        "workers": len(workers),
        "generators": len(shares),
        "connected": total,
        # From the generators' own clocks: their start-up is not connecting.
        "connect_rate_per_s": total / max(float(c["seconds"]) for c in connected),
        "connect_seconds_with_startup": connect_seconds,
        "rss_kb_per_connection": grown / max(1, total) / 1024,
        "per_worker": [
            {
                "sockets": held[w],
                "rss_mb": after[w] / 2**20,
                "kb_per_connection": (after[w] - before[w]) / max(1, held[w]) / 1024,
            }
            for w in workers
        ],
        "received": received,
        "reach_ms": (last - published) * 1000 if received else None,
    }


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _publish(port: int) -> float:
    """One publication to the channel, from a connection of its own; when it was sent."""
    import websockets.sync.client as client

    with client.connect(f"ws://127.0.0.1:{port}/ws?user=publisher") as ws:
        ws.recv()  # welcome
        sent = time.time()
        ws.send(json.dumps({"type": "publish", "channel": CHANNEL, "data": "hello", "id": 1}))
        while json.loads(ws.recv()).get("type") != "ack":
            pass
    return sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=19_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--settle", type=float, default=5.0, help="s before reading RSS")
    parser.add_argument("--json", type=Path, help="append the result here")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the server
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
