"""docs/security.md's recipes that mint tokens from a Django view and from a Node backend, run
as written: each block is taken from the doc, run by Django (its test client) or by Node (with
the ``jsonwebtoken`` package that tests/js/recipes pins), and its tokens are then used against
a real ``wshub serve`` by a client that is not ours (tests/recipes_support.py says how).

The FastAPI recipe is run by tests/test_docs.py with the same check.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.identity_support import auth, unidentified
from tests.recipes_support import backend_tokens_work
from tests.support import ROOT, ServerProcess, free_port
from tests.test_docs import SECRET, all_snippets, http, snippet, wait_healthy
from tests.test_tokens import private_pem, public_pem

RECIPES = ROOT / "tests" / "js" / "recipes"


@pytest.fixture
def hub() -> Iterator[ServerProcess]:
    proc = ServerProcess(env={"WSHUB_JWT_SECRET": SECRET}).start()
    yield proc
    proc.stop()


def reader_env(**extra: str) -> dict[str, str]:
    """A reader's environment: none of this suite's WSHUB_ settings, the hub's secret."""
    mine = {k: v for k, v in os.environ.items() if not k.startswith("WSHUB_")}
    return {**mine, "WSHUB_JWT_SECRET": SECRET, **extra}


async def test_the_django_recipe_mints_tokens_the_hub_accepts(
    tmp_path: Path, hub: ServerProcess
) -> None:
    (tmp_path / "views.py").write_text(snippet("docs/security.md: # views.py").text)
    paths = [
        "anonymous:/wshub/token",
        "anonymous:/wshub/rooms/42/token",
        "/wshub/token",
        "/wshub/token",
        "/wshub/rooms/42/token",
        "/wshub/rooms/7/token",
    ]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.django_recipe", str(tmp_path), *paths],
        cwd=ROOT,
        env=reader_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answers: dict[str, collections.deque[tuple[int, bytes]]] = collections.defaultdict(
        collections.deque
    )
    for path, (status, body) in zip(paths, json.loads(done.stdout), strict=True):
        answers[path].append((status, body.encode()))
    # login_required: no token for a user who is not logged in, only the way to log in.
    assert [answers[p].popleft()[0] for p in paths[:2]] == [302, 302]

    async def get(path: str) -> tuple[int, bytes]:
        return answers[path].popleft()

    await backend_tokens_work(hub.url, get)


def installed_recipes() -> Path:
    """tests/js/recipes with its pinned packages (``make test`` installs them first)."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to run the Node recipe"
    installed = RECIPES / "node_modules" / ".package-lock.json"
    lock = RECIPES / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=RECIPES,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    return RECIPES / "node_modules"


def test_the_node_recipe_mints_tokens_the_hub_accepts(tmp_path: Path, hub: ServerProcess) -> None:
    # The Node backend's block; the browser's (wshub.js) block beside it runs in no Node.
    blocks = [
        s
        for s in all_snippets(("js",))
        if s.path == "docs/security.md" and 'require("jsonwebtoken")' in s.text
    ]
    assert len(blocks) == 1, "a new Node block in docs/security.md: run it here"
    (tmp_path / "server.js").write_text(blocks[0].text)
    node = shutil.which("node")
    assert node, "node is needed to run the Node recipe"
    port = free_port()
    env = reader_env(PORT=str(port), NODE_PATH=str(installed_recipes()))

    async def get(path: str) -> tuple[int, bytes]:
        return await asyncio.to_thread(http, f"http://127.0.0.1:{port}{path}")

    with subprocess.Popen(
        [node, "server.js"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as backend:
        try:
            wait_healthy(port, backend, "/wshub/token")
            asyncio.run(backend_tokens_work(hub.url, get))
            assert http(f"http://127.0.0.1:{port}/elsewhere")[0] == 404
        finally:
            backend.terminate()
            backend.wait(10)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_jsonwebtoken_signs_rs256_and_es256_as_the_recipe_says(
    tmp_path: Path, algorithm: str
) -> None:
    """ "With RS256 or ES256, pass the private key instead of SECRET": the hub, given the
    public key, takes what jsonwebtoken signs with the private one."""
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    (tmp_path / "private.pem").write_bytes(private_pem(key))
    (tmp_path / "public.pem").write_bytes(public_pem(key))
    node = shutil.which("node")
    assert node, "node is needed to run the Node recipe"
    sign = (
        'const jwt = require("jsonwebtoken"); const fs = require("node:fs");'
        "const [key, algorithm] = process.argv.slice(1);"
        'console.log(jwt.sign({ sub: "alice", join: ["chat:*"] }, fs.readFileSync(key),'
        " { algorithm, expiresIn: 60 }));"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [node, "-e", sign, str(tmp_path / "private.pem"), algorithm],
        env=reader_env(NODE_PATH=str(installed_recipes())),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    hub = ServerProcess("--jwt-public-key", str(tmp_path / "public.pem")).start()
    try:
        async with unidentified(hub.url) as alice:
            assert (await auth(alice, done.stdout.strip()))["user"] == "alice"
            assert (await alice.join("chat:a"))["type"] == "joined"
    finally:
        hub.stop()
