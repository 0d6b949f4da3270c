"""Typed TypeScript from channel routes: typegen/channel-types.mjs (json-schema-to-typescript,
pinned in typegen/package-lock.json) writes types from a live hub's AsyncAPI document, and
tsc checks a program on them (tests/js/typed/main.ts) and rejects a wrong one, line by line.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.channel_app import build
from tests.support import ROOT, serve_in_process

pytestmark = pytest.mark.slow  # npm, node and tsc

TYPEGEN = ROOT / "typegen"
PROJECT = ROOT / "tests" / "js" / "typed"


def run(*cmd: str, cwd: Path = PROJECT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def installed(project: Path) -> Path:
    """``npm ci`` from the committed lock, once (again when the lock changes)."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to generate and check the TypeScript types"
    marker = project / "node_modules" / ".package-lock.json"
    lock = project / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        done = run(npm, "ci", "--no-audit", "--no-fund", cwd=project, timeout=300)
        assert done.returncode == 0, done.stderr
    return project


@pytest.fixture
async def channels_ts() -> str:
    """channels.ts generated from the shop's served document, as a user runs the command."""
    installed(TYPEGEN)
    installed(PROJECT)
    node = shutil.which("node")
    assert node
    _, app = build()
    out = PROJECT / "channels.ts"
    out.unlink(missing_ok=True)
    async with serve_in_process(app) as address:
        url = f"http://{address}/asyncapi.json"
        # In a thread: the server answering the command runs on this event loop.
        command = (node, str(TYPEGEN / "channel-types.mjs"), url, "--out", str(out))
        made = await asyncio.to_thread(run, *command)
    assert made.returncode == 0, made.stderr
    return out.read_text()


def tsc(*args: str) -> subprocess.CompletedProcess[str]:
    return run(str(PROJECT / "node_modules" / ".bin" / "tsc"), *args)


async def test_the_types_are_json_schema_to_typescripts_and_a_program_checks(
    channels_ts: str,
) -> None:
    assert 'export type Status = "placed" | "shipped" | "delivered";' in channels_ts
    assert "export interface OrderEvent {" in channels_ts
    assert '  C extends `orders:${string}` ? ChannelPayloads["orders:{order_id}"] :' in (
        channels_ts
    )
    assert "  C extends `shop:${string}:${string}` ? Json :" in channels_ts  # no model
    checked = tsc("-p", "tsconfig.json")
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_wrong_program_fails_on_every_wrong_line(channels_ts: str) -> None:
    wrong = (PROJECT / "wrong.ts").read_text().splitlines()
    expected = {n for n, line in enumerate(wrong, 1) if "// WRONG" in line}
    checked = tsc(
        "--noEmit", "--strict", "--module", "NodeNext", "--moduleResolution", "NodeNext",
        "--target", "ES2022", "--types", "node", "wrong.ts",
    )  # fmt: skip
    assert checked.returncode != 0
    failed = {int(n) for n in re.findall(r"^wrong\.ts\((\d+),\d+\): error", checked.stdout, re.M)}
    assert failed == expected, checked.stdout
