"""The browser client as an npm package: ``wshub/static`` installs with ``npm install <path>``,
its TypeScript declarations check a real program (and reject a wrong one), and that program
runs under Node against a live ``wshub serve``.

``tests/js/client`` depends on the package by path (``file:``), with typescript and
@types/node pinned in its committed package-lock.json; ``npm ci`` installs them into its
git-ignored node_modules (``make test`` does it first; this module does it when missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support import ROOT
from wshub import __version__
from wshub.core.auth import mint_token

pytestmark = pytest.mark.slow  # npm, tsc and Node against a real node

PACKAGE = ROOT / "wshub" / "static"
PROJECT = ROOT / "tests" / "js" / "client"
SECRET = "js-package-secret-of-at-least-32-bytes"


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=PROJECT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def project() -> Path:
    """tests/js/client with its pinned packages installed and main.ts compiled to out/."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to test the JavaScript package"
    installed = PROJECT / "node_modules" / ".package-lock.json"
    lock = PROJECT / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = run(npm, "ci", "--no-audit", "--no-fund", timeout=300)
        assert done.returncode == 0, done.stderr
    compiled = run(str(PROJECT / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return PROJECT


def node_command() -> list[str]:
    """node, with the flag that turns on its WHATWG WebSocket before Node 22."""
    node = shutil.which("node")
    assert node, "node is needed to test the JavaScript package"
    has_websocket = run(node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)")
    return [node] if has_websocket.returncode == 0 else [node, "--experimental-websocket"]


def test_the_package_is_named_wshub_at_the_python_packages_version() -> None:
    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert (manifest["name"], manifest["version"]) == ("wshub", __version__)
    for name in ("main", "types"):
        assert (PACKAGE / manifest[name]).is_file()


def test_npm_packs_the_client_and_its_types_only() -> None:
    npm = shutil.which("npm")
    assert npm
    packed = subprocess.run(
        [npm, "pack", "--dry-run", "--json"],
        cwd=PACKAGE, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    [info] = json.loads(packed.stdout)
    files = sorted(f["path"] for f in info["files"])
    # sse_link.js: wshub.js imports it, for its Server-Sent Events transport.
    assert files == [
        "package.json",
        "sse_link.d.ts",
        "sse_link.js",
        "wshub-tokens.js",
        "wshub.d.ts",
        "wshub.js",
    ]


def test_a_typescript_program_runs_under_node_against_a_live_server(
    project: Path, make_server: ServerFactory
) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    now = time.time()
    grants = {"join": ["chat:*"], "publish": ["chat:*"]}
    first = mint_token(SECRET, "ts", ttl=5, now=now, **grants)  # long enough to start node
    second = mint_token(SECRET, "ts", ttl=3600, now=now, **grants)
    done = subprocess.run(
        [*node_command(), "out/main.js", node.url, first, second],
        cwd=project, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [json.loads(line) for line in done.stdout.splitlines()]
    assert [s["step"] for s in steps] == ["getToken", "published", "getToken", "refreshed"]
    connecting, published, refreshing, refreshed = steps
    assert connecting["cause"] == "connect"
    assert published["user"] == "ts"
    assert published["message"]["data"] == {"text": "before"}
    # Asked before the first token's end, and the connection stayed: no reconnect.
    assert (refreshing["cause"], refreshing["expires"]) == ("refresh", int(now + 5))
    assert refreshed["expires"] == int(now + 3600)
    assert refreshed["reconnects"] == 0
    assert refreshed["message"]["data"] == {"text": "after"}
    assert refreshed["message"]["offset"] == published["offset"] + 1


def test_a_wrong_program_does_not_type_check(project: Path) -> None:
    checked = run(
        str(project / "node_modules" / ".bin" / "tsc"), "--noEmit", "--strict",
        "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext",
        "--types", "node", "wrong.ts",
    )  # fmt: skip
    assert checked.returncode != 0
    for mistake in ("'tokn' does not exist", "'chanel' does not exist", "'number' is not"):
        assert mistake in checked.stdout, checked.stdout
