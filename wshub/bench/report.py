"""A benchmark's result: the numbers, their text and JSON forms, and the generator's verdict
on itself (was it the bottleneck?)."""

from __future__ import annotations

import array
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Generator", "Result", "Server", "percentiles"]

#: A generator process above this share of a core could not keep up.
SATURATED_CPU = 0.9
#: Event-loop lag (receivers) or schedule lag (publishers) above this means falling behind.
SATURATED_LAG = 0.1


def percentiles(values: array.array[float] | list[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean of ``values`` (nearest rank), or zeros when empty."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return float(ordered[min(n - 1, max(0, math.ceil(q * n) - 1))])

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": float(ordered[-1]),
        "mean": math.fsum(ordered) / n,
    }


@dataclass
class Server:
    """What the server spent, read from /proc when its pid was given."""

    pid: int
    cpu_seconds: float
    wall_seconds: float
    rss_before: int
    rss_after: int

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class Generator:
    """The load generator's own load: if it was saturated, the server was not measured at
    its limit (though its CPU per delivery still was).

    Event-loop lag counts only at a fixed rate: at saturation, frames arrive in bursts of
    up to ``window`` publications per connection, and one pass of the loop over such a burst
    is work, not falling behind; CPU tells saturation there.
    """

    client: str
    processes: int
    cores: int
    cpu: list[float]  # share of one core, per process (receivers first, then publishers)
    loop_lag_max: float
    publisher_behind_max: float
    fixed_rate: bool = True

    @property
    def reasons(self) -> list[str]:
        found = []
        if self.cpu and max(self.cpu) >= SATURATED_CPU:
            found.append(f"a generator process used {max(self.cpu):.0%} of a core")
        elif sum(self.cpu) >= SATURATED_CPU * self.cores:
            found.append(f"the generator used {sum(self.cpu):.0%} of its {self.cores} core(s)")
        if self.fixed_rate and self.loop_lag_max >= SATURATED_LAG:
            found.append(f"receive loop lagged {self.loop_lag_max * 1000:.0f} ms")
        if self.publisher_behind_max >= SATURATED_LAG:
            found.append(f"publishers fell {self.publisher_behind_max * 1000:.0f} ms behind")
        return found

    @property
    def saturated(self) -> bool:
        return bool(self.reasons)


@dataclass
class Result:
    url: str
    dialect: str
    mode: str  # "saturation" or "rate"
    rate: float  # publications per second (all publishers), 0 in saturation
    duration: float
    receivers: int
    connected: int
    channels: int
    publishers: int
    size: int
    sent: int
    expected: int
    delivered: int
    elapsed: float  # from the first publication to the last delivery
    latency_ms: dict[str, float]
    connect_failures: dict[str, int]
    error_frames: int
    closed_by_server: dict[str, int]
    out_of_order: int
    generator: Generator
    server: Server | None = None
    #: Per delivery: seconds since the start, and latency in ms (for plots; not in JSON).
    times: array.array[float] = field(default_factory=lambda: array.array("d"), repr=False)
    latencies: array.array[float] = field(default_factory=lambda: array.array("f"), repr=False)

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def delivery_ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 0.0

    @property
    def deliveries_per_cpu_s(self) -> float | None:
        if self.server is None or self.server.cpu_seconds <= 0:
            return None
        return self.delivered / self.server.cpu_seconds

    @property
    def errors(self) -> int:
        return (
            sum(self.connect_failures.values())
            + self.error_frames
            + sum(self.closed_by_server.values())
            + self.out_of_order
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["times"], data["latencies"]
        data["delivered_per_s"] = self.delivered_per_s
        data["delivery_ratio"] = self.delivery_ratio
        data["errors"] = self.errors
        data["generator"]["saturated"] = self.generator.saturated
        data["generator"]["reasons"] = self.generator.reasons
        if self.server is not None:
            data["server"]["cpu_share"] = self.server.cpu_share
            data["server"]["deliveries_per_cpu_s"] = self.deliveries_per_cpu_s
        return data

    def to_text(self) -> str:
        mode = "saturation" if self.mode == "saturation" else f"{self.rate:g} publications/s"
        lat = self.latency_ms
        lines = [
            f"{self.url}  ({self.dialect}, {mode}, {self.duration:g} s)",
            f"  receivers   {self.connected}/{self.receivers} on {self.channels} channel(s), "
            f"{self.publishers} publisher(s), payload padding {self.size} B",
            f"  sent        {self.sent} publications, {self.expected} deliveries expected",
            f"  delivered   {self.delivered} ({self.delivery_ratio:.2%}), "
            f"{self.delivered_per_s:,.0f} msgs/s",
            f"  latency ms  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
            f"max {lat['max']:.2f}",
            f"  errors      {self.errors}"
            + (f"  connect failures {self.connect_failures}" if self.connect_failures else "")
            + (f"  error frames {self.error_frames}" if self.error_frames else "")
            + (f"  closed by server {self.closed_by_server}" if self.closed_by_server else "")
            + (f"  out of order {self.out_of_order}" if self.out_of_order else ""),
        ]
        if self.server is not None:
            s = self.server
            lines.append(
                f"  server      {s.cpu_seconds:.2f} CPU s ({s.cpu_share:.0%} of a core), "
                f"{self.deliveries_per_cpu_s or 0:,.0f} deliveries per CPU second, "
                f"RSS {s.rss_before / 2**20:.1f} -> {s.rss_after / 2**20:.1f} MiB"
            )
        g = self.generator
        cpu = ", ".join(f"{c:.0%}" for c in g.cpu)
        verdict = "SATURATED: " + "; ".join(g.reasons) if g.saturated else "not saturated"
        lines.append(
            f"  generator   {g.client}, {g.processes} processes on {g.cores} core(s), "
            f"CPU per process {cpu}; {verdict}"
        )
        return "\n".join(lines)
