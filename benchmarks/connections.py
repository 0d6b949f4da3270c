"""Many connections on one machine: RSS per connection, connect rate, a round's reach.

``make bench-connections`` runs two scenarios against real ``wshub serve`` processes:

- one process (``--workers 1``) with 19,000 connections (one process may open 20,000 files on
  the machines this was written for: a hard limit);
- ``--workers 6`` on Redis (a ``redis-server`` started on a free port, or ``--redis URL``)
  with 100,000 connections.

The connections come from several load-generator processes (:mod:`.connections_load`), each
under the open-files limit and bound to its own loopback source addresses (127.0.0.2 and up),
with enough handshakes in flight that the server, not the generator, sets the connect rate.
Each connection is a distinct user and joins one of ``--channels`` channels, round-robin
(default: one per 100 connections). One channel for everyone would measure presence instead:
each join sends ``member_joined`` to every member already there, n²/2 frames in all (180
million at 19,000), and wshub has no setting that turns presence events off. With channels of
100, presence costs about 50 frames per connection: linear.

A round of publications is one ``publish`` to every channel, each from a publisher
connection of its own (``--per-publisher`` more: a connection's frames are served in order,
and the HTTP API has no batch endpoint), all written at once. The reach of a round is the time
from that write to the last receiver's arrival; p50 and p99 of the arrivals go with it.
``--rounds`` rounds; their medians are reported.

Reported: the server's RSS growth per connection (per worker, from the sockets each worker
holds, and in total), the connect rate, each round's reach, and CPU seconds of the server,
the generators and Redis during each phase, with a verdict on who was the limit.

    python -m benchmarks.connections --connections 19000 --workers 1
    python -m benchmarks.connections --connections 100000 --workers 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import connections_plan
from benchmarks.connections_load import Publisher, channel_name, publications
from benchmarks.connections_plan import Plan
from benchmarks.connections_processes import (
    Generators,
    Redis,
    accepted,
    clients,
    cpu_now,
    free_port,
    phase,
    start_redis,
    until_ready,
    workers_of,
)
from benchmarks.connections_report import Phase, one_round, rounds_summary
from wshub.bench.procstat import process_tree, rss_bytes

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1


def run(args: argparse.Namespace, plan: Plan) -> dict[str, object]:
    redis_url, redis_proc = start_redis(args.redis) if args.workers > 1 else (None, None)
    flags = ["--max-connections", str(plan.max_connections), "--log-level", "warning"]
    flags += ["--max-connections-per-user", "0"]
    if redis_url:
        flags += ["--workers", str(args.workers), "--broker", redis_url]
    log = tempfile.NamedTemporaryFile(prefix="bench-connections-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "wshub", "serve", "--port", str(plan.shares[0].port), *flags],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "WSHUB_DRAIN_SECONDS": "0"},
    )
    try:
        shared = Redis(redis_url) if redis_url else None
        if shared and shared.state()["maxclients"] < int(str(plan.expected["redis_clients"])):
            raise RuntimeError(f"Redis maxclients is below {plan.expected['redis_clients']}")
        result = _measure(args, plan, server.pid, shared)
        result["server_log"] = log.name
        return result
    finally:
        tree = process_tree(server.pid)
        server.terminate()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            for pid in tree:  # the workers too: each sits in a process group of its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.wait()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)


def _measure(
    args: argparse.Namespace, plan: Plan, server: int, shared: Redis | None
) -> dict[str, object]:
    port = plan.shares[0].port
    until_ready(port, args.workers)
    workers = workers_of(server, args.workers)
    _say(f"server up: {len(workers)} worker(s)")
    before = {w: rss_bytes(w, tree=False) for w in workers}
    generators = Generators(plan)
    try:
        return _with_generators(args, plan, workers, shared, generators, before)
    finally:
        generators.stop()


def _with_generators(
    args: argparse.Namespace,
    plan: Plan,
    workers: list[int],
    shared: Redis | None,
    generators: Generators,
    before: dict[int, int],
) -> dict[str, object]:
    redis_before = shared.state() if shared else None
    kernel_before = connections_plan.meminfo_kb("Slab")
    generators.hear()  # ready: imported and waiting
    cpu0 = cpu_now(workers, shared)
    go = time.monotonic()
    generators.tell("go")
    reports = generators.hear()
    connect = phase(
        max(r["finished"] for r in reports) - go,
        cpu0,
        cpu_now(workers, shared),
        [r["cpu_seconds"] for r in reports],
    )
    total = sum(int(r["connected"]) for r in reports)
    _say(f"{total} connected in {connect.wall:.1f} s")
    if total == 0:
        raise RuntimeError(f"no connection was made: see {reports}")
    time.sleep(args.settle)  # let the allocator and the kernel settle before reading RSS
    after = {w: rss_bytes(w, tree=False) for w in workers}
    inodes = accepted(plan.shares[0].port)
    held = {w: clients(w, inodes) for w in workers}
    kernel_after = connections_plan.meminfo_kb("Slab")
    redis_after = shared.state() if shared else None
    rounds, publish = _rounds(args, plan, workers, shared, generators, total)
    grown = sum(after[w] - before[w] for w in workers)
    return {
        "command": "python -m benchmarks.connections " + " ".join(args.argv),
        "method": (
            f"{total} distinct users, each joined to one of {plan.channels} channels, presence "
            "on (each join sends member_joined to the members already there); a round is one "
            "publish to every channel, written at once; reach is from that write to the last "
            "arrival"
        ),
        "connections": args.connections,
        "workers": len(workers),
        "generators": len(plan.shares),
        "channels": plan.channels,
        "connected": total,
        "source_addresses": sorted(
            set(inodes.values()), key=lambda a: [int(n) for n in a.split(".")]
        ),
        "failed": sum(int(r["failed"]) for r in reports),
        "retries": sum(int(r["retries"]) for r in reports),
        "refused": sum(int(r["refused"]) for r in reports),
        "connect_rate_per_s": round(total / max(connect.wall, 1e-9)),
        "connect": connect.as_dict(CORES),
        "rss_kb_per_connection": round(grown / max(1, total) / 1024, 2),
        "rss_mb_total": round(sum(after.values()) / 2**20, 1),
        "per_worker": [
            {
                "clients": held[w],
                "rss_mb": round(after[w] / 2**20, 1),
                "kb_per_connection": round((after[w] - before[w]) / max(1, held[w]) / 1024, 2),
            }
            for w in workers
        ],
        "generator_kb_per_connection": round(
            max(r["rss_grown_kb"] / max(1, r["connected"]) for r in reports), 2
        ),
        "kernel_slab_kb_per_connection": round((kernel_after - kernel_before) / max(1, total), 2),
        "redis": {"before": redis_before, "after": redis_after} if shared else None,
        "publication_rounds": rounds,
        "publish": publish.as_dict(CORES),
    }


def _rounds(
    args: argparse.Namespace,
    plan: Plan,
    workers: list[int],
    shared: Redis | None,
    generators: Generators,
    connected: int,
) -> tuple[dict[str, object], Phase]:
    """``args.rounds`` rounds of one publication to every channel; the medians and the CPU."""
    names = [channel_name(c, plan.channels) for c in range(plan.channels)]
    # A connection's frames are served in order, one after the other: one publisher per
    # channel by default, so that the round measures fan-out, not one connection's queue.
    each = args.per_publisher
    groups = [names[i : i + each] for i in range(0, len(names), each)]
    publishers = [Publisher(plan.shares[0].port) for _ in groups]
    figures: list[dict[str, object]] = []
    wall, generator_cpu = 0.0, [0.0] * len(plan.shares)
    cpu0 = cpu_now(workers, shared)
    try:
        for n in range(args.rounds):
            generators.tell(("round", n))
            generators.hear()  # listening
            frames = [publications(group, n) for group in groups]
            start = time.monotonic()
            for publisher, payload in zip(publishers, frames, strict=True):
                publisher.write(payload)
            for publisher, group in zip(publishers, groups, strict=True):
                publisher.acks(len(group))
            acked = time.monotonic()
            reports = generators.hear()
            wall += time.monotonic() - start
            arrivals = [t for r in reports for t in r["arrivals"]]
            dropped = sum(int(r["dropped"]) for r in reports)
            figures.append(one_round(start, acked, arrivals, connected - dropped))
            generator_cpu = [
                a + r["cpu_seconds"] for a, r in zip(generator_cpu, reports, strict=True)
            ]
            _say(f"round {n}: {figures[-1]}")
    finally:
        for publisher in publishers:
            publisher.close()
    cpu = phase(wall, cpu0, cpu_now(workers, shared), generator_cpu)
    return {**rounds_summary(figures), "each": figures}, cpu


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=19_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--channels", type=int, help="channels the connections join (default: one per 100)"
    )
    parser.add_argument("--generators", type=int, default=2, help="at least; more if needed")
    parser.add_argument("--concurrency", type=int, default=1000, help="handshakes in flight")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of publications")
    parser.add_argument(
        "--per-publisher", type=int, default=1, help="publications per publisher connection"
    )
    parser.add_argument(
        "--redis", help="with --workers > 1, a Redis URL to use (default: start redis-server)"
    )
    parser.add_argument("--settle", type=float, default=2.0, help="s before reading RSS")
    parser.add_argument("--json", type=Path, help="append the result here")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every child
    channels = args.channels or math.ceil(args.connections / 100)
    plan = connections_plan.make(
        args.connections,
        args.workers,
        channels,
        args.generators,
        args.concurrency,
        free_port(),
        math.ceil(channels / args.per_publisher),
    )
    _say(json.dumps({"expected": plan.expected, "warnings": plan.warnings}, indent=2))
    if plan.problems:
        sys.exit("cannot run: " + "; ".join(plan.problems))
    result = {**run(args, plan), "expected": plan.expected, "warnings": plan.warnings}
    print(json.dumps(result, indent=2))
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
