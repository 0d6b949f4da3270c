"""Replays the abuse scenarios of issue 11 against a real ``wshub serve`` on 127.0.0.1.

For each scenario a fresh node starts, 20 neighbours connect and ping it (a JSON ``ping``
every 50 ms each, plus a ``GET /healthz`` every 0.25 s from new sockets), and the node's RSS
and the neighbours' round trips are measured before, during and after the attack, which runs
in a process of its own so that it does not share the neighbours' event loop. Bounded in
count and time: about 8 minutes in all (items 2 to 4 of the issue, in
abuse_queues.py, about 5 of them). Not part of ``make test``.

    python -m benchmarks.abuse                      # every scenario, this source tree
    python -m benchmarks.abuse --only flood,pinned  # some of them
    python -m benchmarks.abuse --source /tmp/main   # another checkout (e.g. before a fix)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from benchmarks.abuse_queues import (
    attack_fast_pause,
    attack_history_flood,
    attack_idle_consumers,
    attack_ping_flood,
    attack_ping_noread,
    attack_presence_flood,
)

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
NEIGHBOURS = 20
PR_SET_PDEATHSIG = 1


@dataclass
class Scenario:
    name: str
    what: str
    flags: tuple[str, ...] = ()
    nofile: int | None = None  # the node's file-descriptor limit (ulimit -n)
    during: float = 10.0  # seconds the attack runs at most


SCENARIOS = [
    Scenario("pinned", "2,000 handshakes with a 9 KB request line, held open", during=6),
    Scenario("fd_starve", "ulimit -n 512: 520 sockets that never send a byte", nofile=512),
    Scenario("slowloris", "500 sockets sending a request at one byte a second", during=14),
    Scenario("big_headers", "20 connections each sending a 25 MB header to /healthz"),
    Scenario(
        "flood",
        "--rate-limit 50: one client publishing as fast as it can",
        ("--rate-limit", "50"),
        during=14,
    ),
    Scenario("history_names", "history of 100,000 distinct channel names, never joined", during=60),
    Scenario("join_leave", "join and leave 100,000 distinct channels", during=60),
    Scenario("meta", "10 connections, each joining 128 channels with 60 KB meta", during=30),
    Scenario("history_flood", "a client that never reads: 150 history of a full channel"),
    Scenario(
        "presence_flood",
        "a client that never reads: 100 presence of 150 members with the largest meta accepted",
        during=25,
    ),
    Scenario("fast_pause", "20 consumers pausing 16 s, reading 0.3 s; 60 KB at 60/s", during=36),
    Scenario("idle_consumers", "2,000 consumers that never read; 1 KB at 200/s", during=30),
    Scenario(
        "ping_flood",
        "--rate-limit 50: WebSocket pings as fast as possible, read",
        ("--rate-limit", "50"),
        during=15,
    ),
    Scenario("ping_noread", "WebSocket pings as fast as possible, never read", during=15),
]
_NEW_ATTACKS = (
    attack_fast_pause,
    attack_history_flood,
    attack_idle_consumers,
    attack_ping_flood,
    attack_ping_noread,
    attack_presence_flood,
)  # imported so that ATTACKS below finds them by name


# --- the node ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_node(source: Path, port: int, scenario: Scenario) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(source), "WSHUB_LOG_LEVEL": "error"}
    limit = scenario.nofile

    def lower_limit() -> None:
        # The node dies with this script, even when a time limit kills the script.
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.Popen(
        [sys.executable, "-m", "wshub", "serve", "--port", str(port), *scenario.flags],
        env=env,
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lower_limit,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1),
        ):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the node did not start")


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- the neighbours ---------------------------------------------------------------------------


@dataclass
class Phase:
    rtts: list[float] = field(default_factory=list)
    health_ok: int = 0
    health_failed: int = 0
    rss_peak: float = 0.0
    fds_peak: int = 0


class Neighbours:
    """Clients that only ping: their round trips say what the attack costs everyone else."""

    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self.phase = Phase()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for n in range(NEIGHBOURS):
            ws = await websockets.connect(f"ws://127.0.0.1:{self.port}/ws?user=n{n}")
            await ws.recv()  # welcome
            self._tasks.append(asyncio.create_task(self._ping(ws)))
        self._tasks.append(asyncio.create_task(self._health()))
        self._tasks.append(asyncio.create_task(self._sample()))

    async def _ping(self, ws: Any) -> None:
        n = 0
        while True:
            n += 1
            started = time.perf_counter()
            try:
                await ws.send(json.dumps({"type": "ping", "id": n}))
                while json.loads(await asyncio.wait_for(ws.recv(), 10)).get("id") != n:
                    pass
            except Exception:
                self.phase.rtts.append(10.0)  # lost: counted as a 10 s round trip
                return
            self.phase.rtts.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)

    async def _health(self) -> None:
        def get() -> bool:
            try:
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=3) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        while True:
            if await asyncio.to_thread(get):
                self.phase.health_ok += 1
            else:
                self.phase.health_failed += 1
            await asyncio.sleep(0.25)

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.phase.rss_peak = max(self.phase.rss_peak, rss(self.pid))
                self.phase.fds_peak = max(self.phase.fds_peak, open_fds(self.pid))
            await asyncio.sleep(0.2)

    def next_phase(self) -> Phase:
        done, self.phase = self.phase, Phase()
        return done

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- the attacks (each in a process of its own) -----------------------------------------------

Attack = Callable[[int, float], Awaitable[dict[str, Any]]]


async def raw_sockets(port: int, count: int) -> list[tuple[asyncio.StreamReader, Any]]:
    out = []
    for _ in range(count):
        try:
            out.append(await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            break
    return out


async def still_open(conns: list[tuple[asyncio.StreamReader, Any]]) -> int:
    """How many of ``conns`` the node has not closed (no EOF readable yet)."""

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            while await asyncio.wait_for(reader.read(65536), 0.05):
                pass
            return True
        except TimeoutError:
            return False
        except OSError:
            return True

    results = await asyncio.gather(*(closed(r) for r, _ in conns))
    return sum(not c for c in results)


async def attack_pinned(port: int, seconds: float) -> dict[str, Any]:
    conns = await raw_sockets(port, 2000)
    line = b"GET /ws?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    for _, writer in conns:
        writer.write(line + b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await asyncio.sleep(seconds - 1)
    return {"opened": len(conns), "held_by_node": await still_open(conns)}


async def attack_fd_starve(port: int, seconds: float) -> dict[str, Any]:
    conns = await raw_sockets(port, 520)
    await asyncio.sleep(seconds - 1)
    return {"opened": len(conns), "held_by_node": await still_open(conns)}


async def attack_slowloris(port: int, seconds: float) -> dict[str, Any]:
    conns = await raw_sockets(port, 500)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    started = time.monotonic()
    for byte in request:
        if time.monotonic() - started > seconds - 2:
            break
        for _, writer in conns:
            with contextlib.suppress(Exception):
                writer.write(bytes([byte]))
        await asyncio.sleep(1)
    return {"opened": len(conns), "held_by_node": await still_open(conns)}


async def attack_big_headers(port: int, seconds: float) -> dict[str, Any]:
    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent, chunk = 0, b"a" * 65536
        try:
            while sent < 25 * MB:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.write(b"\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)
        except (OSError, TimeoutError):
            pass
        writer.close()
        return sent

    sent = await asyncio.gather(*(one() for _ in range(20)))
    return {"sent_mb_each": round(statistics.median(sent) / MB, 2)}


async def attack_flood(port: int, seconds: float) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    sent = 0
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws?user=flood", max_queue=None) as ws:

        async def read() -> None:
            async for raw in ws:
                frame = json.loads(raw)
                counts[frame.get("code") or frame["type"]] += 1

        reader = asyncio.create_task(read())
        frame = json.dumps({"type": "publish", "channel": "flood", "data": "x"})
        started = time.monotonic()
        with contextlib.suppress(websockets.ConnectionClosed):
            while time.monotonic() - started < seconds:
                for _ in range(100):
                    await ws.send(frame)
                sent += 100
                await asyncio.sleep(0)
        close = ws.close_code if ws.close_code is not None else "open"
        reader.cancel()
    return {"sent": sent, "replies": dict(counts), "closed": close}


async def _pipelined(port: int, frames: list[str], seconds: float) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    started = time.monotonic()
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws?user=namer", max_size=None) as ws:
        await ws.recv()
        for start in range(0, len(frames), 500):
            if time.monotonic() - started > seconds:
                break
            batch = frames[start : start + 500]
            for text in batch:
                await ws.send(text)
            for _ in batch:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                counts[frame.get("code") or frame["type"]] += 1
    return {"replies": dict(counts), "seconds": round(time.monotonic() - started, 1)}


async def attack_history_names(port: int, seconds: float) -> dict[str, Any]:
    frames = [json.dumps({"type": "history", "channel": f"n{n}"}) for n in range(100_000)]
    return await _pipelined(port, frames, seconds)


async def attack_join_leave(port: int, seconds: float) -> dict[str, Any]:
    frames = []
    for n in range(100_000):
        frames.append(json.dumps({"type": "join", "channel": f"c{n}"}))
        frames.append(json.dumps({"type": "leave", "channel": f"c{n}"}))
    return await _pipelined(port, frames, seconds)


async def attack_meta(port: int, seconds: float) -> dict[str, Any]:
    meta = {"blob": "m" * 60_000}
    counts: Counter[str] = Counter()
    conns = []
    for n in range(10):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?user=meta{n}", max_size=None)
        await ws.recv()
        conns.append(ws)
        for c in range(128):
            await ws.send(json.dumps({"type": "join", "channel": f"m{n}-{c}", "meta": meta}))
        for _ in range(128):
            frame = json.loads(await ws.recv())
            counts[frame.get("code") or frame["type"]] += 1
    await asyncio.sleep(2)  # held while the node is measured
    for ws in conns:
        await ws.close()
    return {"replies": dict(counts)}


ATTACKS: dict[str, Attack] = {
    name.removeprefix("attack_"): fn
    for name, fn in globals().items()
    if name.startswith("attack_") and callable(fn)
}


# --- one scenario -----------------------------------------------------------------------------


def summary(phase: Phase) -> dict[str, Any]:
    rtts = sorted(phase.rtts) or [0.0]
    return {
        "p50_ms": round(statistics.median(rtts) * 1000, 2),
        "p99_ms": round(rtts[int(len(rtts) * 0.99) - 1 if len(rtts) > 1 else 0] * 1000, 2),
        "healthz_failed": phase.health_failed,
        "healthz_ok": phase.health_ok,
        "rss_peak_mb": round(phase.rss_peak, 1),
        "fds_peak": phase.fds_peak,
    }


async def run_scenario(source: Path, scenario: Scenario) -> dict[str, Any]:
    port = free_port()
    node = start_node(source, port, scenario)
    neighbours = Neighbours(port, node.pid)
    try:
        await neighbours.start()
        await asyncio.sleep(3)
        before = summary(neighbours.next_phase())
        rss_before = rss(node.pid)
        command = [sys.executable, "-m", "benchmarks.abuse", "--attack", scenario.name]
        command += ["--port", str(port), "--seconds", str(scenario.during)]
        try:
            done = await asyncio.to_thread(
                subprocess.run,
                command,
                cwd=ROOT,
                capture_output=True,
                timeout=scenario.during + 60,
            )
            result = json.loads(done.stdout or b"{}")
        except subprocess.TimeoutExpired:
            result = {"attack": "did not finish in time"}
        during = summary(neighbours.next_phase())
        await asyncio.sleep(3)  # the node settles
        neighbours.next_phase()
        await asyncio.sleep(3)
        after = summary(neighbours.next_phase())
        return {
            "scenario": scenario.name,
            "what": scenario.what,
            "rss_before_mb": round(rss_before, 1),
            "rss_after_mb": round(rss(node.pid), 1),
            "before": before,
            "during": during,
            "after": after,
            "attack": result,
        }
    finally:
        await neighbours.stop()
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def show(r: dict[str, Any]) -> None:
    b, d, a = r["before"], r["during"], r["after"]
    print(f"\n== {r['scenario']}: {r['what']}")
    print(
        f"   RSS {r['rss_before_mb']} MB before, peak {d['rss_peak_mb']} MB during, "
        f"{r['rss_after_mb']} MB after; fds peak {d['fds_peak']} (before {b['fds_peak']})"
    )
    for label, p in (("before", b), ("during", d), ("after", a)):
        print(
            f"   {label:>6}: neighbours' ping p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms; "
            f"/healthz ok {p['healthz_ok']}, failed {p['healthz_failed']}"
        )
    print(f"   attacker: {json.dumps(r['attack'])}", flush=True)


async def main_async(args: argparse.Namespace) -> None:
    if args.attack:
        attack = ATTACKS[args.attack](args.port, args.seconds)
        try:  # bounded even when the node stops answering
            result = await asyncio.wait_for(attack, args.seconds + 30)
        except TimeoutError:
            result = {"attack": "timed out"}
        print(json.dumps(result), flush=True)
        return
    only = set(args.only.split(",")) if args.only else None
    source = Path(args.source)
    results = []
    print(f"wshub abuse scenarios, node from {args.source}", flush=True)
    for scenario in SCENARIOS:
        if only is None or scenario.name in only:
            try:
                limit = scenario.during + 120
                results.append(await asyncio.wait_for(run_scenario(source, scenario), limit))
            except TimeoutError:
                print(f"\n== {scenario.name}: did not finish in time", flush=True)
                continue
            show(results[-1])
    if args.json:
        text = json.dumps(results, indent=2) + "\n"
        await asyncio.to_thread(Path(args.json).write_text, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT), help="the source tree whose node runs")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--attack", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
