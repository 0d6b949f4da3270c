"""The detail tables of ``benchmarks.compare``: saturation per window, and equal offered loads.

Every throughput figure sits next to its latency (p50/p99 of the same measurement), and every
line says in how many rounds the load generator was the limit (then the figure is the
generator's, not the server's).
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.contenders import CONTENDERS

Row = dict[str, Any]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def detail_tables(
    results: dict[str, list[Row]], args: argparse.Namespace, med: dict[str, dict[str, float]]
) -> str:
    """Markdown: one table for the saturated windows, one for the offered loads."""
    names = [c.name for c in CONTENDERS if results.get(c.name)]
    labels = {c.name: c.label for c in CONTENDERS}
    nan = float("nan")
    out: list[str] = []
    windows = ints(getattr(args, "windows", ""))
    if windows:
        out += [
            f"Saturation, N = {args.receivers} receivers, by publications in flight:",
            "",
            "| server | in flight | deliveries per server CPU-second | vs Node `ws` "
            "| delivered msgs/s | p50 ms | p99 ms | generator the limit (rounds) |",
            "|" + " --- |" * 8,
        ]
        for w in windows:
            node = med.get("node-ws", {}).get(f"w{w}_dps", nan)
            for n in names:
                m = med[n]
                limited = sum(bool(r.get(f"w{w}_generator_limit")) for r in results[n])
                out.append(
                    f"| {labels[n]} | {w} | {m.get(f'w{w}_dps', nan):,.0f} "
                    f"| {m.get(f'w{w}_dps', nan) / node:.2f}x "
                    f"| {m.get(f'w{w}_delivered', nan):,.0f} | {m.get(f'w{w}_p50', nan):.2f} "
                    f"| {m.get(f'w{w}_p99', nan):.2f} | {limited}/{len(results[n])} |"
                )
        out.append("")
    offered = ints(getattr(args, "offered", ""))
    if offered:
        out += [
            f"Equal offered load, N = {args.receivers} receivers:",
            "",
            "| server | deliveries/s offered | delivered msgs/s | server CPU (share of a core) "
            "| deliveries per server CPU-second | p50 ms | p99 ms "
            "| generator the limit (rounds) |",
            "|" + " --- |" * 8,
        ]
        for d in offered:
            for n in names:
                m = med[n]
                limited = sum(bool(r.get(f"at{d}_generator_limit")) for r in results[n])
                out.append(
                    f"| {labels[n]} | {d:,} | {m.get(f'at{d}_delivered', nan):,.0f} "
                    f"| {m.get(f'at{d}_cpu', nan):.0%} | {m.get(f'at{d}_dps', nan):,.0f} "
                    f"| {m.get(f'at{d}_p50', nan):.2f} "
                    f"| {m.get(f'at{d}_p99', nan):.2f} | {limited}/{len(results[n])} |"
                )
        out.append("")
    return "\n".join(out)
