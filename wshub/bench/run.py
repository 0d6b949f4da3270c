"""The load generator's parent: lays out receivers and publishers over processes, runs
measurements and turns what the processes saw into a :class:`~wshub.bench.report.Result`.

Receivers stay connected across measurements (:meth:`LoadGenerator.measure` may run several
times), which lets ``benchmarks/`` take a saturation run and a fixed-rate run on the same
connections, and measure a server's idle memory with :meth:`LoadGenerator.connect` alone.
"""

from __future__ import annotations

import array
import math
import multiprocessing as mp
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from wshub.bench.dialect import WSHUB, Dialect
from wshub.bench.links import available_client
from wshub.bench.procstat import cpu_seconds, rss_bytes
from wshub.bench.report import Generator, Result, Server, percentiles
from wshub.bench.workers import (
    RECEIVER_USER,
    Board,
    publisher_main,
    publisher_user,
    receivers_main,
)

__all__ = ["BenchConfig", "LoadGenerator", "Progress", "run_bench"]

#: Receivers per process below which another receiver process is not worth starting.
RECEIVERS_PER_PROCESS = 100


@dataclass
class BenchConfig:
    url: str
    receivers: int = 100
    channels: int = 1
    publishers: int = 1
    #: Publications per second, all publishers together; 0: saturation.
    rate: float = 0.0
    duration: float = 10.0
    #: Padding added to every payload, in bytes.
    size: int = 16
    #: Saturation: publications the slowest receiver may be behind before publishers wait.
    window: int = 64
    #: Receiver processes; 0: one per usable core, for at least 100 receivers each.
    processes: int = 0
    client: str = "auto"
    dialect: Dialect = WSHUB
    server_pid: int | None = None
    #: After the last publication, wait for deliveries still on their way while they keep
    #: coming (a slow server may have a backlog), giving up after this many seconds
    #: without progress.
    drain: float = 1.0
    channel_prefix: str = field(default_factory=lambda: f"bench-{secrets.token_hex(3)}-")
    #: A server with auth: one token for every connection (it must allow joining and
    #: publishing ``bench-*``), or the server's HS256 secret to mint one per simulated user.
    token: str = ""
    jwt_secret: str = ""

    def token_for(self, user: str) -> str:
        """The token ``user``'s connections present; empty in open mode."""
        if self.token or not self.jwt_secret:
            return self.token
        from wshub.core.auth import mint_token

        channels = [f"{self.channel_prefix}*"]
        ttl = 3600 + 2 * self.duration  # long enough for any run, expired soon after
        return mint_token(self.jwt_secret, user, channels, channels, ttl)


@dataclass
class Progress:
    """A snapshot for a live display."""

    phase: str  # "connecting", "publishing", "draining"
    elapsed: float
    duration: float
    connected: int
    receivers: int
    sent: int
    delivered: int
    rate: float  # deliveries per second over the last interval
    errors: int
    closed: int


OnProgress = Callable[[Progress], None]


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0))


class LoadGenerator:
    """Receivers connected in worker processes, ready to measure a server."""

    def __init__(self, config: BenchConfig, on_progress: OnProgress | None = None) -> None:
        self.config = config
        self.on_progress = on_progress or (lambda p: None)
        self.client = available_client(config.client)
        self.url = config.url.rstrip("/")
        self.ctx = mp.get_context("spawn")
        n = max(0, config.receivers)
        procs = config.processes or min(
            _usable_cores(), max(1, math.ceil(n / RECEIVERS_PER_PROCESS))
        )
        self.n_procs = max(1, min(procs, n)) if n else 0
        self.channel_names = [f"{config.channel_prefix}{k}" for k in range(config.channels)]
        self.subscribers: Counter[str] = Counter()  # connected receivers per channel
        raw = self.ctx.RawArray
        self.board = Board(
            r_connected=raw("q", max(1, self.n_procs)),
            r_received=raw("q", max(1, self.n_procs)),
            r_slowest=raw("q", max(1, self.n_procs)),
            r_closed=raw("q", max(1, self.n_procs)),
            p_sent=raw("q", max(1, config.publishers)),
            p_errors=raw("q", max(1, config.publishers)),
        )
        if not self.n_procs:
            self.board.r_slowest[0] = 1 << 62
        self.procs: list[BaseProcess] = []
        self.pipes: list[Pipe] = []
        self.connected = 0
        self.connect_failures: Counter[str] = Counter()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def connect(self) -> int:
        """Start the receiver processes and wait until every receiver is subscribed (or has
        failed); the number subscribed."""
        n = self.config.receivers
        members = [(i, self.channel_names[i % self.config.channels]) for i in range(n)]
        per = math.ceil(n / self.n_procs) if self.n_procs else 0
        for slot in range(self.n_procs):
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(
                target=receivers_main,
                args=(
                    self.client,
                    self.url,
                    self.config.dialect,
                    members[slot * per : (slot + 1) * per],
                    self.board,
                    slot,
                    child,
                    self.config.token_for(RECEIVER_USER),
                ),
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
            self.pipes.append(parent)
        start = time.monotonic()
        waiting = set(range(self.n_procs))
        while waiting:
            for slot in list(waiting):
                if self.pipes[slot].poll(0.05):
                    ready = self.pipes[slot].recv()
                    self.connected += ready["connected"]
                    self.connect_failures.update(ready["failures"])
                    self.subscribers.update(ready["joined"])
                    waiting.discard(slot)
                elif not self.procs[slot].is_alive():
                    raise RuntimeError(f"receiver process {slot} died while connecting")
            self._show("connecting", time.monotonic() - start, 0.0, 0, 0, 0.0)
        return self.connected

    def _show(
        self, phase: str, elapsed: float, duration: float, sent: int, delivered: int, rate: float
    ) -> None:
        b = self.board
        self.on_progress(
            Progress(
                phase=phase,
                elapsed=elapsed,
                duration=duration,
                connected=sum(b.r_connected) - sum(b.r_closed),
                receivers=self.config.receivers,
                sent=sent,
                delivered=delivered,
                rate=rate,
                errors=sum(b.p_errors) + sum(self.connect_failures.values()),
                closed=sum(b.r_closed),
            )
        )

    def measure(
        self,
        *,
        rate: float | None = None,
        duration: float | None = None,
        publishers: int | None = None,
    ) -> Result:
        """Publish for ``duration`` seconds (at ``rate`` publications/s, 0: saturation) and
        measure what the connected receivers get."""
        cfg = self.config
        rate = cfg.rate if rate is None else rate
        duration = cfg.duration if duration is None else duration
        n_pub = cfg.publishers if publishers is None else publishers
        assert n_pub <= len(self.board.p_sent), "more publishers than the board was made for"
        b = self.board
        for j in range(len(b.p_sent)):
            b.p_sent[j] = 0
            b.p_errors[j] = 0
        pubs: list[tuple[BaseProcess, Pipe]] = []
        for j in range(n_pub):
            # Publisher j starts its round-robin over channels at channel j.
            channels = self.channel_names[j:] + self.channel_names[:j]
            parent, child = self.ctx.Pipe()
            pub: BaseProcess = self.ctx.Process(
                target=publisher_main,
                args=(
                    self.client,
                    self.url,
                    cfg.dialect,
                    j,
                    channels,
                    b,
                    child,
                    cfg.token_for(publisher_user(j)),
                ),
                daemon=True,
            )
            pub.start()
            pubs.append((pub, parent))
        for _, pipe in pubs:
            reply = pipe.recv() if pipe.poll(60) else "no answer in 60 s"
            if reply != "ready":
                for pub, _ in pubs:
                    pub.kill()
                raise RuntimeError(f"a publisher could not connect: {reply}")
        gen_pids = self.pids + [p.pid for p, _ in pubs if p.pid is not None]
        gen_cpu0 = [cpu_seconds(pid, tree=False) for pid in gen_pids]
        pid = cfg.server_pid
        server_cpu0 = cpu_seconds(pid) if pid else 0.0
        rss0 = rss_bytes(pid) if pid else 0
        for slot in range(self.n_procs):
            b.r_received[slot] = 0
        wall0 = time.monotonic()
        t0 = time.time()
        for pipe in self.pipes:
            pipe.send(("go", t0))
        for pipe in self.pipes:
            if pipe.recv() != "going":
                raise RuntimeError("a receiver process did not start measuring")
        flow = self.connected > 0
        for _, pipe in pubs:
            pipe.send(("go", duration, rate / n_pub if n_pub else 0.0, cfg.window, cfg.size, flow))

        reports: dict[int, dict[str, Any]] = {}
        last_delivered, last_at = 0, wall0
        while len(reports) < n_pub:
            for j, (pub, pipe) in enumerate(pubs):
                if j not in reports and pipe.poll(0.05):
                    reports[j] = pipe.recv()
                elif j not in reports and not pub.is_alive():
                    raise RuntimeError(f"publisher {j} died")
            now = time.monotonic()
            if now - last_at >= 0.25:
                delivered = sum(b.r_received)
                speed = (delivered - last_delivered) / (now - last_at)
                last_delivered, last_at = delivered, now
                self._show("publishing", now - wall0, duration, sum(b.p_sent), delivered, speed)

        sent_by_channel: Counter[str] = Counter()
        for report in reports.values():
            sent_by_channel.update(report["sent"])
        expected = sum(n * self.subscribers[ch] for ch, n in sent_by_channel.items())
        still_since, seen = time.monotonic(), -1
        while True:
            delivered = sum(b.r_received)
            if delivered >= expected:
                break
            if delivered != seen:
                seen, still_since = delivered, time.monotonic()
            elif time.monotonic() - still_since > cfg.drain:
                break  # nothing moving: the rest is lost
            self._show("draining", time.monotonic() - wall0, duration, sum(b.p_sent), delivered, 0)
            time.sleep(0.02)
        wall = time.monotonic() - wall0
        server = None
        if pid:
            server = Server(pid, cpu_seconds(pid) - server_cpu0, wall, rss0, rss_bytes(pid))
        gen_cpu = [
            (cpu_seconds(p, tree=False) - c0) / wall
            for p, c0 in zip(gen_pids, gen_cpu0, strict=True)
        ]
        for pipe in self.pipes:
            pipe.send(("collect",))
        collected = [pipe.recv() for pipe in self.pipes]
        for pub, _ in pubs:
            pub.join(5)

        times: array.array[float] = array.array("d")
        latencies: array.array[float] = array.array("f")
        closed: Counter[str] = Counter()
        for c in collected:
            times.frombytes(c["times"])
            latencies.frombytes(c["latencies"])
            closed.update(c["closed"])
        delivered = sum(c["received"] for c in collected)
        last = max(times) if times else wall
        return Result(
            url=cfg.url,
            dialect=cfg.dialect.name,
            mode="rate" if rate else "saturation",
            rate=rate,
            duration=duration,
            receivers=cfg.receivers,
            connected=self.connected,
            channels=cfg.channels,
            publishers=n_pub,
            size=cfg.size,
            sent=sum(sent_by_channel.values()),
            expected=expected,
            delivered=delivered,
            elapsed=max(last, 1e-9),
            latency_ms=percentiles(latencies),
            connect_failures=dict(self.connect_failures),
            error_frames=sum(r["errors"] for r in reports.values())
            + sum(c["errors"] for c in collected),
            closed_by_server=dict(closed),
            out_of_order=sum(c["out_of_order"] for c in collected),
            generator=Generator(
                client=self.client,
                processes=len(gen_pids),
                cores=_usable_cores(),
                cpu=gen_cpu,
                loop_lag_max=max((c["loop_lag_max"] for c in collected), default=0.0),
                publisher_behind_max=max((r["behind_max"] for r in reports.values()), default=0),
                fixed_rate=bool(rate),
            ),
            server=server,
            times=times,
            latencies=latencies,
        )

    def close(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            if proc.is_alive():
                try:
                    pipe.send(("close",))
                    if pipe.poll(10):
                        pipe.recv()
                except (OSError, EOFError):
                    pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.procs.clear()
        self.pipes.clear()


def run_bench(config: BenchConfig, on_progress: OnProgress | None = None) -> Result:
    """Connect the receivers, take one measurement, disconnect."""
    with LoadGenerator(config, on_progress) as generator:
        generator.connect()
        return generator.measure()
