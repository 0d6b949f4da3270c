"""The shell and Python snippets of README.md and docs/*.md, run as written against live servers.

Every ```sh, ```console and ```python block is found here and either run (the table below says
how, and what its output must show) or exempt with the reason. A new snippet fails until it is
added: the docs stay true because nothing in them goes unrun without a stated reason.

Runs change only what a reader's machine would differ in: the port (``127.0.0.1:8000`` becomes
a free one, and ``WSHUB_PORT`` is set), Redis's address, and a few sizes made small (a bench of
1,000 receivers for 10 s becomes 20 for 1 s). Each runnable snippet gets fresh servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.recipes_support import backend_tokens_work
from tests.support import ROOT, RedisProcess, ServerProcess, connect, free_port
from wshub.core.auth import mint_token

SECRET = "docs-secret-" + "x" * 32
API_KEY = "docs-api-key"
BIN = str(Path(sys.executable).parent)
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_RUN_LANGS = ("sh", "console", "python")


@dataclass(frozen=True)
class Snippet:
    path: str
    line: int
    lang: str
    text: str

    @property
    def key(self) -> str:
        """The file and the first line that tells the snippet apart (imports do not)."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        if self.lang == "python":
            lines = [ln for ln in lines if not ln.startswith(("import ", "from "))] or lines
        return f"{self.path}: {lines[0]}"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


def all_snippets(langs: tuple[str, ...] = _RUN_LANGS) -> list[Snippet]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            if m.group(1) in langs:
                line = text[: m.start()].count("\n") + 1
                found.append(Snippet(str(path.relative_to(ROOT)), line, m.group(1), m.group(2)))
    return found


def snippet(key: str, langs: tuple[str, ...] = _RUN_LANGS) -> Snippet:
    (found,) = [s for s in all_snippets(langs) if s.key.startswith(key)]
    return found


# --- running things -----------------------------------------------------------------------


@dataclass
class Run:
    """Where a snippet runs: a folder of its own, a port, and the variables a reader set."""

    cwd: Path
    port: int
    env: dict[str, str]

    def local(self, text: str) -> str:
        return text.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``script`` in bash, stopping at the first failure; background jobs end with it."""
        wrapped = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + self.local(script)
        return subprocess.run(
            ["bash", "-eo", "pipefail", "-c", wrapped],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", self.local(code)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def server(self, *flags: str, **env: str) -> ServerProcess:
        return ServerProcess(*flags, port=self.port, env=env).start()


@pytest.fixture
def run(tmp_path: Path) -> Run:
    port = free_port()
    mine = {k: v for k, v in os.environ.items() if not k.startswith("WSHUB_")}
    env = {
        **mine,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "WSHUB_PORT": str(port),
        "WSHUB_URL": f"ws://127.0.0.1:{port}",
        "WSHUB_LOG_LEVEL": "warning",
        "WSHUB_DRAIN_SECONDS": "0",
        "SECRET": SECRET,
        "API_KEY": API_KEY,
        "WSHUB_API_KEY": API_KEY,
        "PYTHONPATH": str(ROOT),
    }
    return Run(tmp_path, port, env)


def console_script(text: str) -> tuple[str, list[str]]:
    """A ```console block as a script (its ``$`` commands) and the output lines it shows.

    A command that starts a server in the background is followed by a wait for its health,
    as a reader types the next command only once it is up.
    """
    commands, output = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\"):
                i += 1
                command += "\n" + lines[i]
            commands.append(command)
            if "wshub serve" in command and "&" in command:
                commands.append(_WAIT_HEALTHY)
        else:
            output.append(line)
        i += 1
    return "\n".join(commands), output


_WAIT_HEALTHY = (
    "for _ in $(seq 300); do curl -sf http://127.0.0.1:$WSHUB_PORT/healthz >/dev/null && break;"
    " sleep 0.1; done"
)


def shell_lines(text: str) -> list[str]:
    """A ```sh block's commands (continuations joined), without comment-only lines."""
    commands: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line
        if line.endswith("\\"):
            pending += "\n"
            continue
        commands.append(pending)
        pending = ""
    return commands


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def http(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextlib.contextmanager
def background(run: Run, command: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        ["bash", "-c", "exec " + run.local(command)],
        cwd=run.cwd,
        env=run.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def wait_healthy(port: int, proc: subprocess.Popen[str], path: str = "/healthz") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with contextlib.suppress(OSError):
            if http(f"http://127.0.0.1:{port}{path}")[0] == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing answered {path} on port {port}")


# --- how each snippet runs ----------------------------------------------------------------


def serves_until_stopped(run: Run, command: str) -> None:
    """A ``wshub serve`` line: it starts, answers /healthz, and exits 0 on Ctrl+C."""
    with background(run, command) as proc:
        wait_healthy(run.port, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.communicate()


def readme_scale_out(s: Snippet, run: Run) -> None:
    redis = RedisProcess().start()
    try:
        command = s.text.replace("127.0.0.1:6379", f"127.0.0.1:{redis.port}")
        command = command.replace("--host 0.0.0.0", "--host 127.0.0.1")  # traffic stays local
        serves_until_stopped(run, command)
    finally:
        redis.stop()


def scaling_lines(s: Snippet, run: Run) -> None:
    # Line 2 runs against a local Redis with a password; lines 1 and 3 need a host named
    # redis.internal (and a TLS Redis): the same flags with another address.
    line = shell_lines(s.text)[1].split("#")[0]
    redis = RedisProcess(password="docs-pw").start()
    try:
        command = line.replace(":PASSWORD@127.0.0.1:6379", f":docs-pw@127.0.0.1:{redis.port}")
        serves_until_stopped(run, command)
    finally:
        redis.stop()


def scaling_cluster_lines(s: Snippet, run: Run) -> None:
    # Line 2 runs against a local 1-master Redis Cluster with a password; lines 1 and 3 name
    # the hosts of a real deployment (and a TLS cluster): the same flags with other addresses.
    from tests.cluster import RedisCluster

    line = shell_lines(s.text)[1].split("#")[0]
    cluster = RedisCluster(masters=1, replicas=0, password="docs-pw").start()
    try:
        port = cluster.ports[0]
        command = line.replace(":PASSWORD@127.0.0.1:7000", f":docs-pw@127.0.0.1:{port}")
        serves_until_stopped(run, command)
    finally:
        cluster.stop()


def api_publish(s: Snippet, run: Run) -> None:
    node = run.server("--api-key", API_KEY)
    try:
        out = ok(run.sh(s.text))
        reply = json.loads(out)  # the snippet's comment shows {"offset":1,"epoch":"..."}
        assert (reply["offset"], sorted(reply)) == (1, ["epoch", "offset"])
    finally:
        node.stop()


def dashboard_serve(s: Snippet, run: Run) -> None:
    serves_until_stopped(run, shell_lines(s.text)[0].split("#")[0])


def security_token(s: Snippet, run: Run) -> None:
    out = ok(run.sh(s.text.replace("wshub serve &", "wshub serve & " + _WAIT_HEALTHY + ";")))
    token = out.strip().splitlines()[-1]
    assert token.count(".") == 2


def bench_console(s: Snippet, run: Run) -> None:
    script, shown = console_script(s.text)
    script = script.replace("--receivers 1000", "--receivers 20").replace(
        "--duration 10", "--duration 1"
    )
    proc = run.sh(script, timeout=90)
    out = ok(proc)
    assert "receivers   20/20 on 1 channel(s)" in out and "(100.00%)" in out
    assert "server " in out  # --server-pid $SERVER found the server
    assert (run.cwd / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert any(line.startswith("  receivers") for line in shown)


def bench_python(s: Snippet, run: Run) -> None:
    node = run.server()
    try:
        code = s.text.replace("receivers=1000", "receivers=20").replace("duration=8", "duration=1")
        out = ok(run.python(code, timeout=90))
        p99, _, saturation = out.partition(" ")
        assert float(p99) > 0  # the fixed-rate run's latency
        assert "'connected': 20" in saturation and "'delivery_ratio': 1.0" in saturation
    finally:
        node.stop()


def configuration_console(s: Snippet, run: Run) -> None:
    # The file it reads is the ```toml block just above it.
    toml = snippet("docs/configuration.md: # wshub.toml", ("toml",))
    (run.cwd / "wshub.toml").write_text(toml.text)
    run.env = {k: v for k, v in run.env.items() if not k.startswith("WSHUB_")}  # a clean shell
    script, shown = console_script(s.text)
    got = ok(run.sh(script)).splitlines()
    position = 0
    for line in shown:  # each shown line, in order; "..." stands for lines left out
        if line == "...":
            continue
        assert line in got[position:], f"{line!r} not in\n" + "\n".join(got)
        position = got.index(line, position) + 1


def clients_console(s: Snippet, run: Run) -> None:
    node = run.server("--jwt-secret", SECRET)
    try:
        run.env["TOKEN"] = mint_token(SECRET, "ops", ["chat:*"], ["chat:*"])
        run.env["EXPIRED"] = mint_token(SECRET, "ops", ["chat:*"], ttl=1, now=1_000_000_000)
        lines = s.text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                proc = run.sh(line[2:])
                assert proc.returncode != 0
                assert proc.stderr.strip() == run.local(lines[i + 1]), proc.stderr
    finally:
        node.stop()


def clients_cli(s: Snippet, run: Run) -> None:
    node = run.server()
    forever, two, *publishes = shell_lines(s.text)
    try:
        with background(run, forever) as ops, background(run, two) as counted:
            asyncio.run(_members(node, "chat:lobby", 2))
            outputs = [json.loads(ok(run.sh(p))) for p in publishes]
            assert outputs == [
                {"channel": "chat:lobby", "offset": 1},
                {"channel": "chat:lobby", "offset": 2},
            ]
            out, err = counted.communicate(timeout=20)
            assert counted.returncode == 0, err
            got = [json.loads(line)["data"] for line in out.splitlines()]
            assert got == [{"text": "deploy done"}, "plain words"]
            assert ops.poll() is None  # "until stopped"
    finally:
        node.stop()


async def _members(node: ServerProcess, channel: str, count: int) -> None:
    async with connect(node.url, "docs-watcher") as watcher:
        async with asyncio.timeout(20):
            while True:
                reply = await watcher.request({"type": "presence", "channel": channel})
                if len(reply["members"]) >= count:
                    return
                await asyncio.sleep(0.05)


def clients_python(s: Snippet, run: Run) -> None:
    node = run.server()
    try:
        out = ok(run.python(s.text))
        assert out.strip() == "1 alice {'text': 'hi'}"
    finally:
        node.stop()


def clients_token_function(s: Snippet, run: Run) -> None:
    node = run.server("--jwt-secret", SECRET)
    run.env["WSHUB_JWT_SECRET"] = SECRET
    try:
        out = ok(run.python(s.text)).splitlines()
        assert out == ["subscribed news:alice", "hello 0"]
    finally:
        node.stop()


def serve_app(
    s: Snippet, run: Run, check: Callable[[str], Coroutine[Any, Any, None]], **env: str
) -> None:
    """A snippet that defines ``app``: served by uvicorn, then ``check(host:port)``."""
    (run.cwd / "docs_app.py").write_text(s.text)
    run.env.update(env)
    command = f"{sys.executable} -m uvicorn docs_app:app --port {run.port} --log-level warning"
    with background(run, command) as proc:
        wait_healthy(run.port, proc, "/openapi.json")
        asyncio.run(check(f"127.0.0.1:{run.port}"))


async def _ship_reaches_followers(host: str, direct_to: str | None = None) -> None:
    async with connect(f"ws://{host}", "bob") as bob, connect(f"ws://{host}", "alice") as alice:
        joined = await bob.request({"type": "join", "channel": "orders:7"})
        assert joined["type"] == "joined", joined  # the example lets anyone follow an order
        status, body = await asyncio.to_thread(http, f"http://{host}/orders/7/ship", {})
        assert (status, json.loads(body)) == (200, {"offset": 1})
        (message,) = await bob.messages(1)
        assert message["data"] == {"status": "shipped"}
        if direct_to:
            direct = await alice.expect("direct")
            assert direct["data"] == {"note": "order 7 shipped"}


def readme_app(s: Snippet, run: Run) -> None:
    serve_app(s, run, _ship_reaches_followers)


def library_app(s: Snippet, run: Run) -> None:
    async def check(host: str) -> None:
        await _ship_reaches_followers(host, direct_to="alice")
        async with connect(f"ws://{host}", "carol") as carol:  # on_publish shapes chat messages
            await carol.join("chat:x")
            assert (await carol.publish("chat:x", {"text": "  hi  "}))["type"] == "ack"
            (message,) = await carol.messages(1)
            assert message["data"] == {"text": "hi", "by": "carol"}

    serve_app(s, run, check)


def library_channels(s: Snippet, run: Run) -> None:
    async def ask(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
        await ws.send(json.dumps({**frame, "id": 1}))
        reply: dict[str, Any] = json.loads(await ws.recv())
        return reply

    async def check(host: str) -> None:
        base = f"ws://{host}/ws"
        alice = {"Cookie": "session=s-alice"}
        sam = {"Cookie": "session=s-sam"}
        async with (
            websockets.connect(base, additional_headers=alice) as a,
            websockets.connect(base, additional_headers=sam) as b,
        ):
            for ws in (a, b):
                assert json.loads(await ws.recv())["type"] == "welcome"

            assert (await ask(a, {"type": "join", "channel": "orders:42"}))["type"] == "joined"
            bad = await ask(a, {"type": "join", "channel": "orders:x"})
            assert bad["message"].startswith("path.order_id: Input should be a valid integer")
            shout = {"type": "publish", "channel": "orders:42", "data": {"status": "placed"}}
            assert (await ask(a, shout))["message"] == "staff only"
            wrong = await ask(b, shout)
            assert wrong["message"] == (
                "invalid data for channel 'orders:42': data.at: Field required [missing]"
            )
            status, body = await asyncio.to_thread(http, f"http://{host}/orders/42/ship", {})
            assert (status, json.loads(body)) == (200, {"offset": 1})
            message = json.loads(await a.recv())
            assert message["data"]["status"] == "shipped" and message["data"]["note"] is None
        async with websockets.connect(base) as stranger:
            await stranger.recv()
            reply = await ask(stranger, {"type": "join", "channel": "orders:42"})
            assert (reply["code"], reply["message"]) == ("forbidden", "sign in first")

    serve_app(s, run, check)


def library_auth(s: Snippet, run: Run) -> None:
    async def check(host: str) -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://{host}/ws?token=forged")
        assert refused.value.response.status_code == 401
        token = mint_token(SECRET, "dana", ["orders:*"])
        async with websockets.connect(f"ws://{host}/ws") as ws:  # the token in the auth frame
            await ws.send(json.dumps({"type": "join", "id": 1, "channel": "orders:1"}))
            assert json.loads(await ws.recv())["code"] == "unauthorized"
            await ws.send(json.dumps({"type": "auth", "id": 2, "token": token}))
            assert json.loads(await ws.recv())["type"] == "welcome"
        async with connect(f"ws://{host}", token=token) as dana:
            assert dana.welcome["user"] == "dana"
        status, _ = await asyncio.to_thread(
            http,
            f"http://{host}/api/publish",
            {"channel": "orders:1", "data": 1},
            {"Authorization": f"apikey {API_KEY}"},
        )
        assert status == 200

    serve_app(s, run, check, WSHUB_JWT_SECRET=SECRET, WSHUB_API_KEY=API_KEY)


def library_page(s: Snippet, run: Run) -> None:
    async def check(host: str) -> None:
        status, page = await asyncio.to_thread(http, f"http://{host}/")
        assert status == 200 and b'from "/static/wshub.js"' in page
        status, js = await asyncio.to_thread(http, f"http://{host}/static/wshub.js")
        assert status == 200 and b"export class WshubClient" in js
        # What the page does, from Python: tests/test_browser_client.py runs it in Chromium.
        async with connect(f"ws://{host}", "alice") as alice:
            await alice.join("orders:1")

    serve_app(s, run, check)


def security_backend(s: Snippet, run: Run) -> None:
    """The FastAPI backend's tokens, used as a browser would against a real hub."""
    hub = ServerProcess(env={"WSHUB_JWT_SECRET": SECRET}).start()

    async def check(host: str) -> None:
        async def get(path: str) -> tuple[int, bytes]:
            return await asyncio.to_thread(http, f"http://{host}{path}")

        await backend_tokens_work(hub.url, get)

    try:
        serve_app(s, run, check, WSHUB_JWT_SECRET=SECRET)
    finally:
        hub.stop()


How = Callable[[Snippet, Run], None] | str
"""A runner, or (a string) the reason the snippet is exempt."""

HOW: dict[tuple[str, str], How] = {
    # (file, how the snippet's telling line starts): a runner, or why it is exempt.
    ("README.md", "make serve"): (
        "`make serve` is `wshub serve` on port 8000 for good, and `make test` is this whole "
        "suite, this test included; every server here is that `wshub serve`"
    ),
    ("README.md", "pip install /path/to/wshub"): (
        "installs packages: the suite itself runs in such an install (make's `pip install -e`)"
    ),
    ("README.md", "websocat ws://"): (
        "websocat is not installed where the tests run; tests/test_chat.py speaks those very "
        "lines to /ws/{client_id} (`You wrote: ...`, `Client #7 says: ...`)"
    ),
    ("README.md", "wshub serve --broker redis://"): readme_scale_out,
    ("README.md", 'hub = Hub("memory://")'): readme_app,
    ("docs/api.md", "curl -X POST"): api_publish,
    ("docs/bench.md", "$ wshub serve & SERVER=$!"): bench_console,
    ("docs/bench.md", "with LoadGenerator("): bench_python,
    ("docs/clients.md", "async def main()"): clients_python,
    ("docs/clients.md", "signer = Signer.from_secret"): clients_token_function,
    ("docs/clients.md", "wshub listen chat:lobby"): clients_cli,
    ("docs/clients.md", "$ wshub listen 'secret:x'"): clients_console,
    ("docs/configuration.md", "$ WSHUB_CONFIG=wshub.toml"): configuration_console,
    ("docs/dashboard-and-metrics.md", "wshub serve --api-key"): dashboard_serve,
    ("docs/deploy.md", "sudo python3 -m venv"): (
        "needs root and systemd; test_the_systemd_steps_create_what_the_unit_runs checks the "
        "venv they create is the one deploy/wshub.service starts"
    ),
    ("docs/deploy.md", "docker compose"): (
        "no Docker engine where the tests run (docs/deploy.md says so); "
        "test_the_docker_build_context_leaves_the_venv_out checks .dockerignore"
    ),
    ("docs/library.md", "class Status(StrEnum):"): library_channels,
    ("docs/library.md", "async def authorize("): library_app,
    ("docs/library.md", "SECRET = os.environ"): library_auth,
    ("docs/library.md", 'hub = Hub("memory://")'): library_page,
    ("docs/scaling.md", "wshub serve --broker redis://redis.internal"): scaling_lines,
    ("docs/scaling.md", "wshub serve --broker redis+cluster://"): scaling_cluster_lines,
    ("docs/security.md", "export WSHUB_JWT_SECRET="): security_token,
    ("docs/security.md", "SECRET = os.environ"): security_backend,
    ("docs/security.md", "# views.py"): (
        "run as written by tests/test_docs_recipes.py, in a process of its own (Django's "
        "settings are global to one), as is the Node recipe"
    ),
}


def how_for(s: Snippet) -> list[tuple[str, str]]:
    """The entries of :data:`HOW` that match ``s``: one, or it is new (or ambiguous)."""
    path, _, line = s.key.partition(": ")
    return [k for k in HOW if k[0] == path and line.startswith(k[1])]


@pytest.mark.parametrize("s", all_snippets(), ids=str)
def test_snippet(s: Snippet, run: Run) -> None:
    matches = how_for(s)
    assert len(matches) == 1, f"{s} is new: run it in HOW, or exempt it with a reason ({s.key!r})"
    how = HOW[matches[0]]
    if isinstance(how, str):
        pytest.skip(f"exempt: {how}")
    how(s, run)


def test_every_entry_names_a_snippet_that_exists() -> None:
    used = [k for s in all_snippets() for k in how_for(s)]
    assert sorted(set(HOW) - set(used)) == []


def test_the_systemd_steps_create_what_the_unit_runs() -> None:
    (steps,) = [
        s.text for s in all_snippets() if how_for(s) == [("docs/deploy.md", "sudo python3 -m venv")]
    ]
    unit = (ROOT / "deploy" / "wshub.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(\S+)", unit, re.M)
    venv = exec_start.removesuffix("/bin/wshub")
    assert f"python3 -m venv {venv}" in steps and f"{venv}/bin/pip install" in steps


def test_the_docker_build_context_leaves_the_venv_out() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns)

    assert ignored(".venv") and ignored(".git")
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in sources.split():
            assert not ignored(source), f"the Dockerfile copies {source}, which is ignored"
