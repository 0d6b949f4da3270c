"""The processes of a ``benchmarks.connections`` run besides the server: Redis, the load
generators, and what ``/proc`` says about each (sockets held, CPU used)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import subprocess
import time
import urllib.request
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import redis

from benchmarks.connections_load import generator
from benchmarks.connections_plan import Plan
from benchmarks.connections_report import Phase, machine_ticks
from wshub.bench.procstat import cpu_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until_ready(port: int, workers: int) -> None:
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


def workers_of(pid: int, expected: int) -> list[int]:
    """The serving processes: the supervisor's children with --workers, else the process."""
    if expected <= 1:
        return [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(c)
        for c in children
        if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
    ]


def accepted(port: int) -> dict[str, str]:
    """The connections accepted on ``port``: socket inode to the peer's address, from
    ``/proc/net/tcp`` (established: not the listening socket, not a worker's Redis links)."""
    local = f":{port:04X}"
    peers = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1].endswith(local) and fields[3] == "01":  # ESTABLISHED
                peer = bytes.fromhex(fields[2].split(":")[0])[::-1]  # little-endian hex
                peers[fields[9]] = ".".join(str(b) for b in peer)
    return peers


def clients(pid: int, inodes: dict[str, str]) -> int:
    """How many of ``inodes`` process ``pid`` holds."""
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(entry)[8:-1] in inodes  # "socket:[INODE]"
        except OSError:
            continue
    return count


def start_redis(url: str | None) -> tuple[str, subprocess.Popen[bytes] | None]:
    """``url``, or a redis-server of our own on a free port (and its process)."""
    if url:
        return url, None
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return url, proc
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)


class Redis:
    """The Redis the workers share: its clients, limit, memory and CPU."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def state(self) -> dict[str, Any]:
        info = self.client.info()
        maxclients = str(self.client.config_get("maxclients")["maxclients"])
        return {
            "clients": info["connected_clients"],
            "maxclients": int(maxclients),
            "used_memory_mb": round(info["used_memory"] / 2**20, 1),
        }

    def cpu(self) -> float:
        """Its CPU seconds so far, from INFO: a Redis given by URL may be any process."""
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Generators:
    """The load-generator processes and their pipes."""

    def __init__(self, plan: Plan) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for share in plan.shares:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=generator, args=(share, theirs), daemon=True)
            proc.start()
            theirs.close()  # so that a generator's death is an EOFError here, not a hang
            self.pipes.append(mine)
            self.procs.append(proc)

    def tell(self, order: object) -> None:
        for pipe in self.pipes:
            pipe.send(order)

    def hear(self) -> list[Any]:
        return [pipe.recv() for pipe in self.pipes]

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("done")
        for proc in self.procs:
            proc.join(120)
            if proc.is_alive():
                proc.kill()


def cpu_now(workers: list[int], shared: Redis | None) -> tuple[list[float], float, tuple[int, int]]:
    return (
        [cpu_seconds(w, tree=False) for w in workers],
        shared.cpu() if shared else 0.0,
        machine_ticks(),
    )


def phase(
    wall: float,
    before: tuple[list[float], float, tuple[int, int]],
    after: tuple[list[float], float, tuple[int, int]],
    generators: list[float],
) -> Phase:
    (busy0, total0), (busy1, total1) = before[2], after[2]
    return Phase(
        wall=wall,
        server=[b - a for a, b in zip(before[0], after[0], strict=True)],
        generators=generators,
        redis=after[1] - before[1],
        machine=(busy1 - busy0) / max(1, total1 - total0),
    )
