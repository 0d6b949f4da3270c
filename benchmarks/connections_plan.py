"""What a ``benchmarks.connections`` run will need, checked against this host before it starts.

A run that dies at 80,000 connections of 100,000 after minutes wastes a quiet machine: the
limits are known in advance (open files per process, ports per source address, the accept
backlog, wshub's own connection and pending-request limits, Redis clients, memory), so they
are computed and printed first, and a run that cannot fit is refused with the reason.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from benchmarks.connections_load import Share, source_address
from wshub.brokers.redis.link import POOL_SIZE
from wshub.transport.uvicorn_http import RequestLimits, pending_cap

FD_RESERVE = 500
"""Descriptors a server worker keeps besides its clients: listening socket, Redis links, logs,
the event loop's own, and handshakes in flight."""
GENERATOR_RESERVE = 2_000
"""Descriptors a load generator keeps free under the limit (its pipes, the loop, retries)."""
MAX_PER_GENERATOR = 18_000
# Costs per connection, measured with this benchmark (docs/performance.md), for the estimate.
SERVER_KB = 8.0
GENERATOR_KB = 4.0
KERNEL_KB = 8.0
"""Both ends of one idle loopback TCP connection: socket, file and epoll structures."""
REDIS_KB = 0.5
"""One user's presence in one channel, in Redis."""
BASE_MB = 80
"""One Python process with wshub (or the generator) imported, before any connection."""
# CPU milliseconds per connection opened and joined (channels of 100: presence included).
SERVER_MS = {False: 1.5, True: 2.4}
"""A worker's, on the memory broker and on Redis."""
GENERATOR_MS = 0.8
REDIS_MS = 0.2


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def meminfo_kb(field: str) -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def port_range() -> tuple[int, int]:
    low, high = _read("/proc/sys/net/ipv4/ip_local_port_range", "32768 60999").split()
    return int(low), int(high)


@dataclass(frozen=True)
class Plan:
    connections: int
    workers: int
    channels: int
    shares: list[Share]
    max_connections: int
    """``--max-connections`` for every worker: the share it may hold, under its file limit."""
    problems: list[str]
    """Reasons the run cannot complete; it is refused when there is any."""
    warnings: list[str]
    expected: dict[str, object]


def make(
    connections: int,
    workers: int,
    channels: int,
    generators: int,
    concurrency: int,
    port: int,
    publishers: int = 1,
) -> Plan:
    """Split ``connections`` over generator processes and source addresses; check the host."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low, high = port_range()
    ports = high - low + 1
    per_generator = min(MAX_PER_GENERATOR, hard - GENERATOR_RESERVE)
    generators = max(generators, math.ceil(connections / per_generator))
    per_source = min(10_000, ports // 2)  # half the range: connect() finds a free port fast
    base, extra = divmod(connections, generators)
    shares, first, address = [], 0, 0
    in_flight = math.ceil(concurrency / generators)
    for g in range(generators):
        count = base + (g < extra)
        k = max(1, math.ceil(count / per_source))
        sources = [source_address(a) for a in range(address, address + k)]
        shares.append(Share(port, first, count, sources, in_flight, channels))
        first, address = first + count, address + k
    max_connections = min(connections + 1_000, hard - FD_RESERVE)
    problems, warnings = [], []
    share = math.ceil((connections + publishers) / workers)  # publishers come last
    if share > max_connections:
        problems.append(
            f"{share} connections per worker do not fit under the open-files limit ({hard}): "
            f"use --workers {math.ceil(connections / max_connections)} or more"
        )
    elif workers > 1 and share * 1.15 > max_connections:
        warnings.append(
            f"{share} per worker is near the {max_connections} a worker may hold: the kernel "
            "spreads accepts unevenly, and a full worker's 503s are retried (counted)"
        )
    backlog = min(
        uvicorn.Config("wshub").backlog, int(_read("/proc/sys/net/core/somaxconn", "4096"))
    )
    pending = pending_cap(RequestLimits().max_pending)
    if concurrency > min(backlog, pending):
        warnings.append(
            f"{concurrency} handshakes in flight exceed the accept backlog ({backlog}) or "
            f"wshub's pending-request cap ({pending} per worker): expect retries"
        )
    file_max = int(_read("/proc/sys/fs/file-max", "0") or 0)
    if file_max and file_max < 2 * connections + 10_000:
        problems.append(f"fs.file-max {file_max} is below both ends of {connections} sockets")
    conntrack = _read("/proc/sys/net/netfilter/nf_conntrack_max")
    if conntrack and int(conntrack) < connections + 10_000:
        warnings.append(f"nf_conntrack_max {conntrack}: a full table drops new connections")
    cores = os.cpu_count() or 1
    if workers + generators + (workers > 1) > cores:
        warnings.append(
            f"{workers} worker(s), {generators} generators{' and Redis' * (workers > 1)} "
            f"share {cores} cores: the CPU figures say who was busy"
        )
    sizes = [connections // channels + (c < connections % channels) for c in range(channels)]
    memory_mb = (
        connections * (SERVER_KB + GENERATOR_KB + KERNEL_KB + REDIS_KB * (workers > 1)) / 1024
        + (workers + generators) * BASE_MB
    )
    available_mb = meminfo_kb("MemAvailable") / 1024
    if memory_mb > 0.9 * available_mb:
        problems.append(f"about {memory_mb:.0f} MB needed, {available_mb:.0f} MB available")
    ms = SERVER_MS[workers > 1] + GENERATOR_MS + REDIS_MS * (workers > 1)
    cpu_s = connections * ms / 1000
    expected = {
        "open_files_limit_per_process": hard,
        "per_worker": {"connections": share, "max_connections": max_connections},
        "publishers": publishers,
        "per_generator": {
            "connections": max(s.count for s in shares),
            "source_addresses": max(len(s.sources) for s in shares),
            "in_flight": in_flight,
        },
        "sources": f"{shares[0].sources[0]} to {shares[-1].sources[-1]}",
        "per_source_address": per_source,
        "ephemeral_ports": f"{low}-{high} ({ports} per source address and destination)",
        "accept_backlog": backlog,
        "pending_request_cap_per_worker": pending,
        "members_per_channel": f"{min(sizes)}-{max(sizes)}",
        "member_joined_frames": sum(m * (m - 1) // 2 for m in sizes),
        "redis_clients": workers * (POOL_SIZE + 2) if workers > 1 else 0,
        "connect_cpu_s": round(cpu_s),
        "connect_s_at_least": round(
            max(cpu_s / cores, connections / workers * SERVER_MS[workers > 1] / 1000)
        ),
        "memory_mb": round(memory_mb),
        "memory_available_mb": round(available_mb),
        "cores": cores,
    }
    return Plan(
        connections, workers, channels, shares, max_connections, problems, warnings, expected
    )
