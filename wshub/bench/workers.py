"""The load generator's processes: receivers and publishers, each an asyncio loop of its own.

The parent (:mod:`wshub.bench.run`) starts them with ``spawn`` and talks to each over a pipe.
Live counters go through a :class:`Board` of shared integers that every process reads without
locks: the parent draws its progress display from it, and publishers use it for flow control.

Flow control: in saturation mode a publisher sends only while the slowest live receiver is
fewer than ``window`` publications behind. This keeps the server's per-connection queues short
(wshub closes a connection whose queue overflows, code 4008), so saturation measures the
fastest rate the whole path sustains rather than how fast queues fill.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import json
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from wshub.bench.dialect import Dialect, Step
from wshub.bench.links import Link, connect

__all__ = [
    "RECEIVER_USER",
    "Board",
    "publisher_main",
    "publisher_user",
    "receivers_main",
    "with_auth",
]

#: Receivers that connect at once, per process: more only fills the server's accept backlog.
CONNECT_CONCURRENCY = 64
#: How often receivers publish their progress and measure their event loop's lag.
TICK = 0.01
_NOBODY = 1 << 62  # "no live receiver here": never the slowest


@dataclass
class Board:
    """Shared counters, one slot per receiver process (``r_*``) or publisher (``p_*``)."""

    r_connected: Any  # multiprocessing RawArray("q")
    r_received: Any
    r_slowest: Any  # fewest messages received by one live receiver of the process
    r_closed: Any
    p_sent: Any
    p_errors: Any


class _Receiver:
    """One receiving connection: handshake first, then counting and timing payloads."""

    __slots__ = ("closed", "count", "inbox", "last", "link", "live", "pool", "signal")

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.link: Link | None = None
        self.inbox: collections.deque[bytes] = collections.deque()
        self.signal = asyncio.Event()
        self.live = False
        self.closed = 0  # close code once closed
        self.count = 0
        self.last: dict[int, int] = {}  # publisher -> last sequence number seen

    def on_frame(self, raw: bytes) -> None:
        pool = self.pool
        i = raw.find(b'"t"')
        if i < 0 or not self.live:
            if raw == pool.keepalive_ping:
                if self.link is not None:
                    self.link.send(pool.keepalive_pong)
            elif not self.live:
                self.inbox.append(raw)
                self.signal.set()
            elif pool.error_marker and pool.error_marker in raw:
                pool.errors += 1
            return
        now = time.time()
        # The payload is {"t":T,"p":P,"s":S,"x":...}; a server may add spaces after ":".
        parts = raw[i + 4 : i + 96].split(b",", 3)
        sent = float(parts[0])
        publisher = int(parts[1].split(b":")[1])
        seq = int(parts[2].split(b":")[1])
        if seq <= self.last.get(publisher, 0):
            pool.out_of_order += 1
        self.last[publisher] = seq
        self.count += 1
        pool.received += 1
        pool.times.append(now - pool.t0)
        pool.latencies.append((now - sent) * 1000.0)

    def on_close(self, code: int) -> None:
        self.closed = code
        self.signal.set()

    async def expect(self, marker: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            while self.inbox:
                if marker in self.inbox.popleft():
                    return
            if self.closed:
                raise ConnectionError(f"closed with code {self.closed} during the handshake")
            self.signal.clear()
            await asyncio.wait_for(self.signal.wait(), max(0.0, deadline - time.monotonic()))


async def _handshake(conn: _Receiver, steps: tuple[Step, ...], fill: dict[str, str]) -> None:
    assert conn.link is not None
    for step in steps:
        if step.send:
            conn.link.send(step.send.format(**fill).encode())
        if step.expect:
            await conn.expect(step.expect.format(**fill).encode(), timeout=30.0)


class _Pool:
    """A process's receivers and what they measured since the last ``go``."""

    def __init__(self, dialect: Dialect) -> None:
        self.keepalive_ping = dialect.keepalive[0].encode() or None
        self.keepalive_pong = dialect.keepalive[1].encode()
        self.error_marker = dialect.error.encode()
        self.reset(time.time())

    def reset(self, t0: float) -> None:
        self.t0 = t0
        self.received = 0
        self.errors = 0
        self.out_of_order = 0
        self.times = array.array("d")
        self.latencies = array.array("f")


RECEIVER_USER = "bench"
"""Every receiver's user id: one user, so joins cause no member_joined fan-out among them."""


def publisher_user(index: int) -> str:
    return f"bench-pub-{index}"


def with_auth(steps: tuple[Step, ...], token: str) -> tuple[Step, ...]:
    """The handshake with the token in the protocol's ``auth`` first frame (a server with
    auth): out of the URL, so out of access logs, as wshub's own clients send it."""
    if not token:
        return steps
    frame = json.dumps({"type": "auth", "id": "auth", "token": token})
    return (Step(send=frame.replace("{", "{{").replace("}", "}}")), *steps)


async def _receivers(
    client: str,
    url: str,
    dialect: Dialect,
    members: list[tuple[int, str]],
    board: Board,
    slot: int,
    pipe: Pipe,
    token: str = "",
) -> None:
    pool = _Pool(dialect)
    conns: list[_Receiver] = []
    failures: collections.Counter[str] = collections.Counter()
    joined: collections.Counter[str] = collections.Counter()  # receivers per channel
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(index: int, channel: str) -> None:
        conn = _Receiver(pool)
        fill = {"channel": channel, "user": RECEIVER_USER, "index": str(index)}
        target = url + dialect.receiver_path.format(**fill)
        async with gate:
            try:
                conn.link = await connect(client, target, conn.on_frame, conn.on_close)
                await _handshake(conn, with_auth(dialect.join, token), fill)
            except Exception as exc:
                failures[f"{type(exc).__name__}: {exc}"[:200]] += 1
                if conn.link is not None:
                    conn.link.close()
                return
        conn.inbox.clear()
        conn.live = True
        conns.append(conn)
        joined[channel] += 1
        board.r_connected[slot] = len(conns)

    await asyncio.gather(*(open_one(i, ch) for i, ch in members))
    pipe.send({"connected": len(conns), "failures": dict(failures), "joined": dict(joined)})

    loop = asyncio.get_running_loop()
    lag_max = 0.0

    async def tick() -> None:
        nonlocal lag_max
        expected = loop.time() + TICK
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            lag_max = max(lag_max, now - expected)
            expected = now + TICK
            live = [c.count for c in conns if not c.closed]
            board.r_received[slot] = pool.received
            board.r_slowest[slot] = min(live) if live else _NOBODY
            board.r_closed[slot] = len(conns) - len(live)

    ticker = asyncio.create_task(tick())
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "go":
            pool.reset(command[1])
            for conn in conns:
                conn.count = 0
                conn.last.clear()
            lag_max = 0.0
            pipe.send("going")  # the parent starts publishers only after every reset
        elif command[0] == "collect":
            closes = collections.Counter(c.closed for c in conns if c.closed)
            pipe.send(
                {
                    "received": pool.received,
                    "errors": pool.errors,
                    "out_of_order": pool.out_of_order,
                    "closed": {str(code): n for code, n in closes.items()},
                    "loop_lag_max": lag_max,
                    "times": pool.times.tobytes(),
                    "latencies": pool.latencies.tobytes(),
                }
            )
        else:  # "close"
            ticker.cancel()
            for conn in conns:
                if not conn.closed and conn.link is not None:
                    with contextlib.suppress(Exception):
                        conn.link.close()
            await asyncio.sleep(0.2)
            pipe.send("closed")
            return


def receivers_main(
    client: str,
    url: str,
    dialect: Dialect,
    members: list[tuple[int, str]],
    board: Board,
    slot: int,
    pipe: Pipe,
    token: str = "",
) -> None:
    """Entry point of a receiver process: connect ``members`` (index, channel), then serve
    ``go`` / ``collect`` / ``close`` commands from the parent."""
    _run(_receivers(client, url, dialect, members, board, slot, pipe, token))


async def _publisher(
    client: str,
    url: str,
    dialect: Dialect,
    index: int,
    channels: list[str],
    board: Board,
    pipe: Pipe,
    token: str = "",
) -> None:
    conn = _Receiver(_Pool(dialect))
    fill = {"channel": channels[0], "user": publisher_user(index), "index": str(index)}
    target = url + dialect.publisher_path.format(**fill)
    try:
        conn.link = await connect(client, target, conn.on_frame, conn.on_close)
        await _handshake(conn, with_auth(dialect.greet, token), fill)
    except Exception as exc:
        pipe.send(f"{type(exc).__name__}: {exc}")
        return
    conn.inbox.clear()
    conn.live = True  # from now on, on_frame counts errors (and payloads, if it hears any)
    link = conn.link
    # A publication is head + payload + tail: format the template once per channel.
    frames = [dialect.publish.format(channel=ch, data="\0").split("\0") for ch in channels]
    pipe.send("ready")
    _, duration, rate, window, size, flow = pipe.recv()
    pad = "x" * size
    n_channels = len(channels)
    sent = [0] * n_channels
    behind_max = 0.0
    start = time.monotonic()
    end = start + duration
    seq = 0
    while (now := time.monotonic()) < end and not conn.closed:
        if rate:
            due = start + seq / rate
            if due > now:
                await asyncio.sleep(due - now)
            else:
                behind_max = max(behind_max, now - due)
            burst = 1
        else:
            behind = sum(board.p_sent) / n_channels - min(board.r_slowest)
            burst = min(16, int(window - behind)) if flow else 16
            if burst <= 0:
                await asyncio.sleep(0.002)  # receivers publish their progress every TICK
                continue
        for _ in range(burst):
            seq += 1
            k = seq % n_channels
            head, tail = frames[k]
            payload = f'{{"t":{time.time():.6f},"p":{index},"s":{seq},"x":"{pad}"}}'
            link.send(f"{head}{payload}{tail}".encode())
            sent[k] += 1
        board.p_sent[index] = seq
        board.p_errors[index] = conn.pool.errors
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)  # replies to the last publications (errors)
    board.p_errors[index] = conn.pool.errors
    pipe.send(
        {
            "sent": dict(zip(channels, sent, strict=True)),
            "errors": conn.pool.errors,
            "behind_max": behind_max,
            "closed": conn.closed,
        }
    )
    link.close()
    await asyncio.sleep(0.1)


def publisher_main(
    client: str,
    url: str,
    dialect: Dialect,
    index: int,
    channels: list[str],
    board: Board,
    pipe: Pipe,
    token: str = "",
) -> None:
    """Entry point of a publisher process: greet, wait for ``go``, publish, report."""
    _run(_publisher(client, url, dialect, index, channels, board, pipe, token))


def _run(main: Any) -> None:
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; without it, asyncio's loop does
        asyncio.run(main)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
