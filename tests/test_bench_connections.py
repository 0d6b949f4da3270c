"""``benchmarks/connections.py`` at a small size, and its pure parts: the frame reader of its
bare receivers and the plan that refuses a run the host cannot hold. Correctness, not speed."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import connections_plan
from benchmarks.connections_load import CLOSE, PING, TEXT, channel_name, split_frames
from tests.support import ROOT


def server_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x80 | opcode, n]) + payload
    if n < 65536:
        return bytes([0x80 | opcode, 126]) + n.to_bytes(2) + payload
    return bytes([0x80 | opcode, 127]) + n.to_bytes(8) + payload


def test_split_frames_reads_every_length_form_and_keeps_a_partial_frame() -> None:
    small, medium, large = b"a" * 5, b"b" * 300, b"c" * 70_000
    stream = server_frame(small) + server_frame(medium, PING) + server_frame(large)
    stream += server_frame(b"\x03\xe8", CLOSE)
    for cut in (1, 3, 9, len(stream) - 1):  # inside a header, a length, a payload
        frames, rest = split_frames(stream[:cut])
        more, rest = split_frames(rest + stream[cut:])
        assert frames + more == [(TEXT, small), (PING, medium), (TEXT, large), (CLOSE, b"\x03\xe8")]
        assert rest == b""


def test_channels_are_shared_round_robin() -> None:
    members = [channel_name(i, 3) for i in range(9)]
    assert sorted(set(members)) == ["cb-0", "cb-1", "cb-2"]
    assert all(members.count(c) == 3 for c in set(members))


def test_the_plan_refuses_more_per_worker_than_its_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    refused = connections_plan.make(hard, 1, hard // 100, 2, 100, 1)
    assert any("--workers" in problem for problem in refused.problems), refused.problems
    spread = connections_plan.make(2 * hard, 6, hard // 50, 2, 100, 1)
    assert not [p for p in spread.problems if "--workers" in p]
    assert spread.max_connections <= hard - connections_plan.FD_RESERVE
    # Each generator under the limit, each source address well inside the port range.
    low, high = connections_plan.port_range()
    for share in spread.shares:
        assert share.count <= hard - connections_plan.GENERATOR_RESERVE
        assert share.count / len(share.sources) <= (high - low + 1) / 2
    sources = [s for share in spread.shares for s in share.sources]
    assert len(set(sources)) == len(sources) and sources[0] == "127.0.0.2"


@pytest.mark.slow
@pytest.mark.timeout(200)  # two workers, Redis and two generators start under a loaded suite
def test_a_small_run_on_two_workers_reaches_everyone_every_round(tmp_path: Path) -> None:
    out = tmp_path / "result.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.connections", "--connections", "300", "--workers",
         "2", "--channels", "3", "--rounds", "2", "--settle", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # its server log goes there
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["connected"] == 300 and result["failed"] == 0
    assert result["generators"] == 2 and result["workers"] == 2
    assert sum(w["clients"] for w in result["per_worker"]) == 300  # each on one worker
    assert result["source_addresses"] == ["127.0.0.2", "127.0.0.3"]  # one per generator
    rounds = result["publication_rounds"]
    assert rounds["complete_rounds"] == 2
    for each in rounds["each"]:
        assert each["received"] == each["expected"] == 300
        assert 0 < each["p50_ms"] <= each["p99_ms"] <= each["reach_ms"]
    assert result["redis"]["after"]["clients"] <= result["redis"]["after"]["maxclients"]
    for phase in ("connect", "publish"):
        assert result[phase]["limit"].startswith(("generator:", "server:", "machine:", "neither"))
