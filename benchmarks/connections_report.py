"""The figures of ``benchmarks.connections``: CPU per phase, who was the limit, round medians."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

BUSY = 0.9
"""A process busy this share of a phase's wall time was running flat out: it set the pace."""


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (``/proc/stat``, all cores)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class Phase:
    """CPU seconds of each side over one phase of the run."""

    wall: float
    server: list[float]
    """Per worker."""
    generators: list[float]
    redis: float
    machine: float
    """Busy share of all the machine's cores."""

    def as_dict(self, cores: int) -> dict[str, object]:
        wall = max(self.wall, 1e-9)
        return {
            "wall_s": round(self.wall, 3),
            "server_cpu_s": round(sum(self.server), 2),
            "busiest_worker": round(max(self.server) / wall, 2),
            "generators_cpu_s": round(sum(self.generators), 2),
            "busiest_generator": round(max(self.generators) / wall, 2),
            "redis_cpu_s": round(self.redis, 2),
            "machine_busy": round(self.machine, 2),
            "limit": self.verdict(cores),
        }

    def verdict(self, cores: int) -> str:
        """Who set the pace: a generator flat out makes the figure the generator's."""
        wall = max(self.wall, 1e-9)
        generator, worker = max(self.generators) / wall, max(self.server) / wall
        if generator >= BUSY:
            return f"generator: one generator process was busy {generator:.0%} of the time"
        if worker >= BUSY:
            return f"server: a worker was busy {worker:.0%}, the busiest generator {generator:.0%}"
        if self.machine >= BUSY:
            total = sum(self.server) + sum(self.generators) + self.redis
            share = sum(self.server) / max(total, 1e-9)
            return (
                f"machine: all {cores} cores busy, {share:.0%} of the CPU used was the server's "
                f"(generators {sum(self.generators) / max(total, 1e-9):.0%})"
            )
        return (
            f"neither saturated (busiest worker {worker:.0%}, generator {generator:.0%}): "
            "bound by latency; more in flight (--concurrency) may go faster"
        )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank)."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def one_round(sent: float, acked: float, arrivals: list[float], expected: int) -> dict[str, object]:
    """A round's figures, in ms from the write of its publications."""
    arrivals.sort()
    if not arrivals:
        return {"received": 0, "expected": expected}
    return {
        "received": len(arrivals),
        "expected": expected,
        "reach_ms": round((arrivals[-1] - sent) * 1000, 2),
        "p50_ms": round((percentile(arrivals, 0.5) - sent) * 1000, 2),
        "p99_ms": round((percentile(arrivals, 0.99) - sent) * 1000, 2),
        "acked_ms": round((acked - sent) * 1000, 2),
    }


def rounds_summary(rounds: list[dict[str, object]]) -> dict[str, object]:
    """Medians over the rounds that reached someone; how many reached everyone."""
    timed = [r for r in rounds if "reach_ms" in r]
    summary: dict[str, object] = {
        "rounds": len(rounds),
        "complete_rounds": sum(r["received"] == r["expected"] for r in rounds),
    }
    for key in ("reach_ms", "p50_ms", "p99_ms", "acked_ms"):
        values = [float(r[key]) for r in timed]  # type: ignore[arg-type]
        if values:
            summary[f"median_{key}"] = round(statistics.median(values), 2)
    return summary
