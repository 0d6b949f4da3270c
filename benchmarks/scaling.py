"""Scaling benchmark: what the Redis hop costs, and what a second worker buys.

Runs, interleaved in one run so that the machine's noise hits every contender alike:

- ``memory``:   one node, in-memory broker;
- ``redis``:    one node, Redis broker;
- ``workers2``: ``wshub serve --workers 2`` on one port, Redis broker.

Two measurements per contender and round, with ``--receivers`` connections on one channel:

- **efficiency**: the publisher at ``--load`` publications per second for ``--duration``
  seconds; deliveries per second of server CPU (summed over a node's worker processes, read
  from /proc). On a 2-core machine the load generator competes with the server for the CPU,
  so "how much CPU does a delivery cost" is the figure that survives the noise;
- **latency**: the publisher at a gentle ``--rate``; publish-to-deliver p50 and p99 in
  milliseconds (the publisher's send time travels in the message). The difference between
  ``redis`` and ``memory`` is what the Redis hop adds.

Receivers run in a separate process so that the load generator and the server do not share
one event loop. Medians over ``--rounds`` are printed as a table, and as JSON with ``--json``.

    python -m benchmarks.scaling --receivers 200 --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import websockets

from tests.support import RedisProcess, ServerProcess

CONTENDERS = ("memory", "redis", "workers2")


async def _receive(url: str, count: int, channel: str, pipe: Pipe) -> None:
    conns = []
    for i in range(count):
        ws = await websockets.connect(f"{url}/ws?user=r{i}", max_size=None, ping_interval=None)
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "join", "channel": channel, "id": 1}))
        while json.loads(await ws.recv())["type"] != "joined":
            pass
        conns.append(ws)
    pipe.send("ready")
    received = 0
    latencies: list[float] = []
    stop = asyncio.Event()

    async def drain(ws: Any) -> None:
        nonlocal received
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                if not raw.startswith('{"type":"message"'):
                    continue  # presence events of the other receivers joining
                received += 1
                if '"lat"' in raw:
                    sent = json.loads(raw)["data"]["t"]
                    latencies.append((time.time() - sent) * 1000)

    tasks = [asyncio.create_task(drain(ws)) for ws in conns]
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
    stop.set()
    for task in tasks:
        task.cancel()
    pipe.send({"received": received, "latencies": latencies})
    for ws in conns:
        with contextlib.suppress(Exception):
            await ws.close()


def _receiver_main(url: str, count: int, channel: str, pipe: Pipe) -> None:
    asyncio.run(_receive(url, count, channel, pipe))


async def _publish(url: str, channel: str, duration: float, rate: float) -> int:
    """Publish for ``duration``; at ``rate`` per second, or as fast as acks allow if 0."""
    async with websockets.connect(f"{url}/ws?user=publisher", max_size=None) as ws:
        await ws.recv()
        sent = 0
        credit = asyncio.Semaphore(64)
        done = asyncio.Event()

        async def acks() -> None:
            while not done.is_set() or credit._value < 64:
                frame = json.loads(await ws.recv())
                if frame["type"] in ("ack", "error"):
                    credit.release()

        reader = asyncio.create_task(acks())
        start = time.perf_counter()
        kind = "lat" if rate else "tp"
        while (elapsed := time.perf_counter() - start) < duration:
            if rate:
                wait = sent / rate - elapsed
                if wait > 0:
                    await asyncio.sleep(wait)
            await credit.acquire()
            data = {kind: sent, "t": time.time()}
            await ws.send(json.dumps({"type": "publish", "channel": channel, "data": data}))
            sent += 1
        done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5)
        return sent


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (a node's worker processes)."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()  # noqa: SIM115
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _measure(
    url: str, receivers: int, duration: float, rate: float, server_pid: int
) -> dict[str, float]:
    channel = f"bench{time.monotonic_ns()}"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver_main, args=(url, receivers, channel, child))
    proc.start()
    assert parent.recv() == "ready"
    started = time.perf_counter()
    cpu_before = _cpu_seconds(server_pid)
    sent = asyncio.run(_publish(url, channel, duration, rate))
    time.sleep(0.5)  # let the last deliveries land
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(server_pid) - cpu_before
    parent.send("stop")
    result = parent.recv()
    proc.join(10)
    lat = sorted(result["latencies"])
    out = {
        "sent": sent,
        "delivered_per_s": result["received"] / elapsed,
        "per_cpu_s": result["received"] / max(cpu, 1e-9),
        "delivery_ratio": result["received"] / max(1, sent * receivers),
    }
    if lat:
        out["p50_ms"] = lat[len(lat) // 2]
        out["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--load", type=float, default=200.0, help="publications/s, efficiency")
    parser.add_argument("--rate", type=float, default=20.0, help="publications/s, latency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    redis = RedisProcess().start()
    flags = {
        "memory": ("--broker", "memory://"),
        "redis": ("--broker", redis.url),
        "workers2": ("--broker", redis.url, "--workers", "2"),
    }
    results: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
    try:
        for round_ in range(args.rounds):
            for name in CONTENDERS:
                server = ServerProcess(*flags[name], "--max-connections", "100000").start()
                try:
                    assert server.proc is not None
                    pid = server.proc.pid
                    tp = _measure(server.url, args.receivers, args.duration, args.load, pid)
                    lat = _measure(server.url, args.receivers, args.duration, args.rate, pid)
                finally:
                    server.stop()
                row = {**tp, "p50_ms": lat.get("p50_ms", 0), "p99_ms": lat.get("p99_ms", 0)}
                results[name].append(row)
                print(f"round {round_ + 1} {name}: {row}", file=sys.stderr)
    finally:
        redis.stop()

    table = {
        name: {
            key: statistics.median(r[key] for r in rows)
            for key in ("delivered_per_s", "per_cpu_s", "delivery_ratio", "p50_ms", "p99_ms")
        }
        for name, rows in results.items()
    }
    if args.json:
        print(json.dumps({"args": vars(args), "medians": table, "runs": results}, indent=2))
        return
    base = table["memory"]["per_cpu_s"]
    print(
        f"receivers={args.receivers} duration={args.duration}s rounds={args.rounds}: "
        f"efficiency at {args.load:g} publications/s, latency at {args.rate:g}/s (medians)"
    )
    print(
        f"{'contender':<10} {'delivered/s':>12} {'per CPU-s':>10} {'vs memory':>10} "
        f"{'delivery':>9} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for name, row in table.items():
        print(
            f"{name:<10} {row['delivered_per_s']:>12.0f} {row['per_cpu_s']:>10.0f} "
            f"{row['per_cpu_s'] / base:>9.2f}x {row['delivery_ratio']:>8.1%} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
        )


if __name__ == "__main__":
    main()
