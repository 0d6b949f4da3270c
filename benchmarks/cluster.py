"""Cluster benchmark: one Redis, a 1-master Redis Cluster and a 3-master one, side by side.

For each contender and round, interleaved so that the machine's noise hits every contender
alike:

- a publisher process drives the Redis broker (``RedisBroker.publish``, the script a node runs
  for every publication) with ``--concurrency`` publications in flight, spread over
  ``--channels`` channels (so over every slot range), for ``--duration`` seconds;
- a subscriber process holds ``--nodes`` brokers (what ``--nodes`` wshub nodes would hold),
  each subscribed to every channel, and counts what reaches them: the fan-out between nodes.

Reported, medians over ``--rounds``: publications per second, deliveries per second, and the
broker's CPU per publication on each shard (``redis-server`` utime + stime from
/proc/<pid>/stat over the publications that shard ran, from INFO commandstats). The clusters
have no replicas here (a replica's WAIT adds a round trip, not shard CPU); on a 2-core machine
the Python load generator is the ceiling, so the ratios and the CPU per publication per shard
are the figures that count, not the absolute rates.

    python -m benchmarks.cluster --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import redis

from tests.cluster import RedisCluster
from tests.support import RedisProcess
from tests.test_redis_broker import Sink
from wshub.brokers.redis import RedisBroker
from wshub.model.config import Settings

CONTENDERS = ("redis", "cluster1", "cluster3")
TICK = os.sysconf("SC_CLK_TCK")


def _channels(count: int) -> list[str]:
    return [f"bench:{i}" for i in range(count)]


async def _subscribe(url: str, nodes: int, channels: int, pipe: Pipe) -> None:
    sinks = [Sink() for _ in range(nodes)]
    brokers = [RedisBroker(url, Settings()) for _ in range(nodes)]
    for broker, sink in zip(brokers, sinks, strict=True):
        await broker.start(sink)
        for channel in _channels(channels):
            await broker.subscribe(channel)
    pipe.send("ready")
    await asyncio.to_thread(pipe.recv)  # the publisher started
    start = sum(len(s.delivered) for s in sinks)
    await asyncio.to_thread(pipe.recv)  # the publisher ended
    await asyncio.sleep(0.5)  # what is still in flight
    pipe.send(sum(len(s.delivered) for s in sinks) - start)
    for broker in brokers:
        await broker.close()


async def _publish(url: str, channels: int, concurrency: int, duration: float) -> int:
    broker = RedisBroker(url, Settings())
    await broker.start(Sink())
    names = _channels(channels)
    data = b'{"bench":"' + b"x" * 80 + b'"}'
    deadline = time.monotonic() + duration
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.monotonic() < deadline:
            await broker.publish(names[i % len(names)], data, None)
            done += 1
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    await broker.close()
    return done


def _run_subscriber(url: str, nodes: int, channels: int, pipe: Pipe) -> None:
    asyncio.run(_subscribe(url, nodes, channels, pipe))


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def _scripts_run(port: int) -> int:
    with redis.Redis(port=port) as client:
        stats = client.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval")
    )


class Contender:
    def __init__(self, name: str) -> None:
        self.name = name
        self.single: RedisProcess | None = None
        self.cluster: RedisCluster | None = None
        if name == "redis":
            self.single = RedisProcess().start()
        else:
            self.cluster = RedisCluster(masters=int(name[-1]), replicas=0).start()

    @property
    def url(self) -> str:
        if self.single is not None:
            return self.single.url
        assert self.cluster is not None
        return self.cluster.url

    def shards(self) -> dict[int, int]:
        """Port -> pid of every master."""
        if self.single is not None:
            assert self.single.proc is not None
            return {self.single.port: self.single.proc.pid}
        assert self.cluster is not None
        return {p: self.cluster.procs[p].pid for p in self.cluster.master_ports()}

    def stop(self) -> None:
        if self.single is not None:
            self.single.stop()
        if self.cluster is not None:
            self.cluster.stop()


def _round(c: Contender, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    sub = ctx.Process(target=_run_subscriber, args=(c.url, args.nodes, args.channels, theirs))
    sub.start()
    assert ours.recv() == "ready"
    shards = c.shards()
    cpu = {p: _cpu_ticks(pid) for p, pid in shards.items()}
    runs = {p: _scripts_run(p) for p in shards}
    ours.send("go")
    started = time.monotonic()
    published = asyncio.run(_publish(c.url, args.channels, args.concurrency, args.duration))
    elapsed = time.monotonic() - started
    ours.send("stop")
    delivered = ours.recv()
    sub.join(30)
    per_shard = {}
    for port, pid in shards.items():
        ran = _scripts_run(port) - runs[port]
        ticks = _cpu_ticks(pid) - cpu[port]
        per_shard[port] = ticks / TICK * 1e6 / ran if ran else 0.0
    return {
        "publications_per_s": published / elapsed,
        "deliveries_per_s": delivered / elapsed,
        "cpu_us_per_publication": sorted(per_shard.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    contenders = [Contender(name) for name in CONTENDERS]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    try:
        for _ in range(args.rounds):
            for c in contenders:
                results[c.name].append(_round(c, args))
    finally:
        for c in contenders:
            c.stop()
    table = {name: _medians(rounds) for name, rounds in results.items()}
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'contender':10} {'pubs/s':>9} {'deliveries/s':>13}  CPU us per publication, per shard")
    for name, row in table.items():
        shards = " ".join(f"{v:6.1f}" for v in row["cpu_us_per_publication"])
        print(
            f"{name:10} {row['publications_per_s']:9.0f} {row['deliveries_per_s']:13.0f}  {shards}"
        )


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    shards = len(rounds[0]["cpu_us_per_publication"])
    return {
        "publications_per_s": statistics.median(r["publications_per_s"] for r in rounds),
        "deliveries_per_s": statistics.median(r["deliveries_per_s"] for r in rounds),
        "cpu_us_per_publication": [
            statistics.median(r["cpu_us_per_publication"][i] for r in rounds) for i in range(shards)
        ],
    }


if __name__ == "__main__":
    main()
