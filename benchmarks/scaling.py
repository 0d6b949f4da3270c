"""Scaling benchmark: what the Redis hop costs, and what a second worker buys.

Runs, interleaved in one run so that the machine's noise hits every contender alike:

- ``memory``:   one node, in-memory broker;
- ``redis``:    one node, Redis broker;
- ``workers2``: ``wshub serve --workers 2`` on one port, Redis broker.

Two measurements per contender and round:

- **fan-out**: ``--receivers`` connections on one channel, one publisher publishing as fast as
  acks come back (a window of 64), for ``--duration`` seconds; delivered messages per second;
- **latency**: the same receivers, the publisher at a fixed ``--rate``; publish-to-deliver
  p50 and p99 in milliseconds (the publisher's send time travels in the message).

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


def _measure(url: str, receivers: int, duration: float, rate: float) -> dict[str, float]:
    channel = f"bench{time.monotonic_ns()}"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver_main, args=(url, receivers, channel, child))
    proc.start()
    assert parent.recv() == "ready"
    started = time.perf_counter()
    sent = asyncio.run(_publish(url, channel, duration, rate))
    time.sleep(0.5)  # let the last deliveries land
    elapsed = time.perf_counter() - started
    parent.send("stop")
    result = parent.recv()
    proc.join(10)
    lat = sorted(result["latencies"])
    out = {
        "sent": sent,
        "delivered_per_s": result["received"] / elapsed,
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
    parser.add_argument("--rate", type=float, default=50.0, help="publications/s for latency")
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
                    tp = _measure(server.url, args.receivers, args.duration, 0)
                    lat = _measure(server.url, args.receivers, args.duration, args.rate)
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
            for key in ("delivered_per_s", "delivery_ratio", "p50_ms", "p99_ms")
        }
        for name, rows in results.items()
    }
    if args.json:
        print(json.dumps({"args": vars(args), "medians": table, "runs": results}, indent=2))
        return
    base = table["memory"]["delivered_per_s"]
    print(
        f"receivers={args.receivers} duration={args.duration}s rounds={args.rounds} "
        f"latency at {args.rate:g} publications/s (medians)"
    )
    print(f"{'contender':<10} {'delivered/s':>12} {'vs memory':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in table.items():
        print(
            f"{name:<10} {row['delivered_per_s']:>12.0f} {row['delivered_per_s'] / base:>9.2f}x "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
        )


if __name__ == "__main__":
    main()
