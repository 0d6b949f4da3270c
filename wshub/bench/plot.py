"""``--plot``: latency over time (every delivery, with a rolling p50 and p99) and a histogram.

matplotlib is an optional extra (``pip install 'wshub[bench]'``), imported only here.
"""

from __future__ import annotations

import math
from pathlib import Path

from wshub.bench.report import Result

__all__ = ["plot"]

#: Points drawn in the scatter; more only slows the drawing down.
MAX_POINTS = 60_000


def plot(result: Result, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    times, lat = result.times, result.latencies
    fig, (over_time, histogram) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[2, 1])
    mode = "saturation" if result.mode == "saturation" else f"{result.rate:g} publications/s"
    fig.suptitle(
        f"{result.dialect}: {result.connected} receivers, {mode}; "
        f"{result.delivered_per_s:,.0f} msgs/s delivered, p99 {result.latency_ms['p99']:.1f} ms"
    )
    step = max(1, len(lat) // MAX_POINTS)
    over_time.scatter(times[::step], lat[::step], s=1, alpha=0.3, color="tab:blue", rasterized=True)
    # Rolling percentiles in 40 time slices.
    if len(times):
        width = max(times) / 40 or 1.0
        slices: dict[int, list[float]] = {}
        for t, value in zip(times, lat, strict=True):
            slices.setdefault(int(t / width), []).append(value)
        xs = sorted(slices)
        for q, color in ((0.5, "tab:green"), (0.99, "tab:red")):
            ys = []
            for x in xs:
                values = sorted(slices[x])
                ys.append(values[min(len(values) - 1, math.ceil(q * len(values)) - 1)])
            over_time.plot([(x + 0.5) * width for x in xs], ys, color=color, label=f"p{q * 100:g}")
        over_time.legend(loc="upper right")
    over_time.set_xlabel("seconds since the first publication")
    over_time.set_ylabel("publish-to-deliver latency (ms)")
    over_time.set_ylim(bottom=0)
    histogram.hist(lat, bins=80, color="tab:blue")
    histogram.set_yscale("log")
    histogram.set_xlabel("latency (ms)")
    histogram.set_ylabel("deliveries")
    for name, color in (("p50", "tab:green"), ("p99", "tab:red")):
        histogram.axvline(result.latency_ms[name], color=color, linestyle="--", label=name)
    histogram.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
