"""``wshub bench`` end to end against real ``wshub serve`` processes, its pure parts, and a
one-round run of ``benchmarks/compare.py``. Small numbers: these check correctness, not speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from tests.support import ROOT, ServerProcess
from wshub.bench import WSHUB
from wshub.bench.procstat import cpu_seconds, process_tree, rss_bytes
from wshub.bench.report import Generator, percentiles
from wshub.cli.main import app
from wshub.protocol import Join, Publish, decode_client_frame

pytestmark = pytest.mark.slow  # real load runs


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wshub", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def bench_json(*args: str) -> dict[str, Any]:
    done = bench(*args, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_fixed_rate_across_channels_delivers_everything_with_server_cpu_and_plot(
    server: ServerProcess, tmp_path: Path
) -> None:
    assert server.proc is not None
    png = tmp_path / "latency.png"
    result = bench_json(
        server.url, "--receivers", "30", "--channels", "3", "--publishers", "2",
        "--rate", "60", "--duration", "1.5", "--processes", "2",
        "--server-pid", str(server.proc.pid), "--plot", str(png),
    )  # fmt: skip
    assert result["connected"] == 30
    assert result["publishers"] == 2 and result["channels"] == 3
    assert 60 <= result["sent"] <= 100  # 60/s for 1.5 s, give or take the schedule's edges
    # Each channel has 10 receivers, so every publication is 10 deliveries.
    assert result["expected"] == result["sent"] * 10
    assert result["delivered"] == result["expected"]
    assert result["delivery_ratio"] == 1.0
    assert result["errors"] == 0 and result["out_of_order"] == 0
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 5000
    server_part = result["server"]
    assert server_part["pid"] == server.proc.pid
    assert server_part["cpu_seconds"] > 0
    assert server_part["deliveries_per_cpu_s"] > 0
    assert result["generator"]["processes"] == 4  # 2 receiver processes and 2 publishers
    assert len(result["generator"]["cpu"]) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saturation_on_the_websockets_client_prints_a_report(server: ServerProcess) -> None:
    done = bench(server.url, "--receivers", "10", "--duration", "1", "--client", "websockets")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "saturation" in out
    assert "10/10 on 1 channel(s)" in out
    assert "(100.00%)" in out
    assert "websockets, 2 processes" in out
    assert "server " not in out  # no --server-pid, no server CPU


def test_refused_receivers_are_reported_as_errors(make_server: Any) -> None:
    # Receivers share one user id; the publisher has its own.
    node = make_server("--max-connections-per-user", "4")
    result = bench_json(node.url, "--receivers", "6", "--rate", "20", "--duration", "0.5")
    assert result["connected"] == 4
    failures = result["connect_failures"]
    assert sum(failures.values()) == 2
    assert all("503" in reason for reason in failures)
    assert result["errors"] == 2
    assert result["delivery_ratio"] == 1.0  # of what the connected receivers should get


def test_a_refused_publisher_fails_the_run_with_the_reason(make_server: Any) -> None:
    node = make_server("--max-connections", "3")
    done = bench(node.url, "--receivers", "3", "--duration", "0.5")
    assert done.returncode == 1
    assert "a publisher could not connect" in done.stderr and "503" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_fails_cleanly() -> None:
    done = bench("ws://127.0.0.1:9", "--receivers", "2", "--duration", "0.5")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--client", "carrier-pigeon"],
        ["--channels", "0"],
        ["--duration", "0"],
        ["--server-pid", "999999999"],
    ],
)
def test_bad_options_are_refused(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2


def test_the_wshub_dialect_speaks_protocol_md() -> None:
    """Frames the generator sends decode as the protocol's own structs."""
    join_step = WSHUB.join[1]
    join = decode_client_frame(join_step.send.format(channel="bench-1", user="bench"))
    assert isinstance(join, Join) and join.channel == "bench-1" and join.id == 1
    assert '"type":"joined"' in join_step.expect and '"type":"welcome"' in WSHUB.join[0].expect
    data = '{"t":1700000000.123456,"p":0,"s":1,"x":"xx"}'
    publish = decode_client_frame(WSHUB.publish.format(channel="bench-1", data=data))
    assert isinstance(publish, Publish) and isinstance(publish.data, msgspec.Raw)
    assert json.loads(bytes(publish.data)) == {"t": 1700000000.123456, "p": 0, "s": 1, "x": "xx"}


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    p = percentiles(values)
    assert (p["p50"], p["p90"], p["p99"], p["max"], p["mean"]) == (50, 90, 99, 100, 50.5)
    assert percentiles([])["p99"] == 0


def test_generator_knows_when_it_was_the_bottleneck() -> None:
    calm = Generator("picows", 2, 2, [0.4, 0.1], 0.01, 0.0)
    assert not calm.saturated
    hot = Generator("picows", 2, 2, [0.95, 0.1], 0.01, 0.0)
    assert hot.saturated and "95%" in hot.reasons[0]
    one_core = Generator("picows", 2, 1, [0.5, 0.45], 0.01, 0.0)
    assert one_core.saturated  # two processes sharing one core, both busy
    lagging = Generator("picows", 1, 2, [0.3], 0.25, 0.0)
    assert lagging.reasons == ["receive loop lagged 250 ms"]
    behind = Generator("picows", 1, 2, [0.3], 0.0, 0.5)
    assert behind.reasons == ["publishers fell 500 ms behind"]


def test_procstat_sums_a_process_tree() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.process_time()\n"
         "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"]
    )  # fmt: skip
    try:
        assert child.pid in process_tree(os.getpid())
        deadline = time.monotonic() + 10
        while cpu_seconds(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        alone = cpu_seconds(os.getpid(), tree=False)
        assert cpu_seconds(os.getpid()) >= alone + 0.25  # the child's CPU counts
        assert rss_bytes(os.getpid()) > rss_bytes(os.getpid(), tree=False) > 0
    finally:
        child.kill()
        child.wait()
    assert process_tree(child.pid) == []


def test_compare_runs_a_round_and_writes_the_table_and_chart(tmp_path: Path) -> None:
    # Two windows and one offered load, not the default three and two: each measurement starts
    # a publisher process, and two windows still make a table of several rows per server.
    md, png = tmp_path / "performance.md", tmp_path / "performance.png"
    md.write_text("# Performance\n\nintro kept\n")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--rounds", "1", "--receivers", "10",
         "--duration", "0.3", "--windows", "4,64", "--offered", "5000", "--idle", "20",
         "--settle", "0.1", "--only", "wshub,tutorial",
         "--md", str(md), "--png", str(png)],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # its bench-*.log files go there
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = md.read_text()
    assert text.startswith("# Performance\n\nintro kept\n")
    for label in ("wshub (`wshub serve`)", "FastAPI tutorial"):
        assert label in text
    assert "idle KB/conn at 20" in text
    assert "Saturation, N = 10 receivers, by publications in flight:" in text
    assert "Equal offered load, N = 10 receivers:" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
