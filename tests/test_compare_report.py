"""The report of ``benchmarks/compare.py`` on synthetic rounds: no servers, no load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.compare import medians, report_table, write_report


def row(cpu: float, p50: float, saturated: bool = False, **extra: Any) -> dict[str, Any]:
    """One round of one contender, shaped as ``measure_load`` and ``measure_idle`` make it."""
    return {
        "deliveries_per_cpu_s": cpu,
        "delivered_per_s": cpu / 2,
        "server_cpu_share": 0.9,
        "saturation_delivery_ratio": 1.0,
        "generator_saturated": saturated,
        "generator_reasons": ["generator CPU at 97%"] if saturated else [],
        "p50_ms": p50,
        "p99_ms": p50 * 3,
        "fixed_delivery_ratio": 1.0,
        "fixed_generator_saturated": False,
        "errors": 0,
        **extra,
    }


def args(rounds: int, idle: str = "1000") -> argparse.Namespace:
    return argparse.Namespace(
        rounds=rounds, receivers=100, rate=5.0, idle=idle, duration=1.0, make=True
    )


# Two rounds, an even count: the median of two lists of reasons was a list + list, / 2.
RESULTS = {
    "wshub": [
        row(100_000, 1.0, saturated=True, idle_kb_1000=10.0),
        row(120_000, 3.0, idle_kb_1000=12.0),
    ],
    "node-ws": [row(50_000, 2.0, idle_kb_1000=4.0), row(70_000, 2.0, idle_kb_1000=6.0)],
    "tutorial": [row(10_000, 9.0), row(30_000, 11.0)],  # no idle figures this run
}


def test_medians_are_of_numbers_only() -> None:
    med = medians(RESULTS["wshub"])
    assert med["deliveries_per_cpu_s"] == 110_000
    assert med["p50_ms"] == 2.0
    assert med["idle_kb_1000"] == 11.0
    assert "generator_reasons" not in med and "generator_saturated" not in med


def test_the_table_has_one_line_per_contender_in_order_with_the_medians() -> None:
    lines = report_table(RESULTS, args(2)).splitlines()
    assert lines[0].startswith("| server | deliveries per server CPU-second (N=100")
    assert "idle KB/conn at 1,000" in lines[0]
    wshub, tutorial, node = lines[2:]
    assert wshub.split(" | ")[1:] == ["110,000", "1.83x", "55,000", "2.00", "6.00", "11.0", "1/2 |"]
    assert tutorial.startswith("| FastAPI tutorial") and " | nan | 0/2 |" in tutorial
    assert node.split(" | ")[1:3] == ["60,000", "1.00x"]


def test_the_report_replaces_its_block_and_keeps_the_rest(tmp_path: Path) -> None:
    md = tmp_path / "performance.md"
    md.write_text("# Performance\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nafter\n")
    write_report(RESULTS, args(2), md, machine="a test machine")
    text = md.read_text()
    assert text.startswith("# Performance\n\n<!-- results:start -->\nMeasured ")
    assert text.endswith("<!-- results:end -->\n\nafter\n")
    assert "old" not in text and "on a test machine. Medians of 2 rounds" in text
    assert "Reproduce: `make bench`" in text
    assert report_table(RESULTS, args(2)) in text
