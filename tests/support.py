"""Shared test machinery: real server processes and a thin client on the `websockets` library."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

ROOT = Path(__file__).resolve().parent.parent
Frame = dict[str, Any]


LOG_DIR: Path | None = None
"""Where servers write their logs; the tests set it to a pytest temporary folder."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A real ``wshub serve`` in its own OS process, on a free port."""

    def __init__(
        self, *flags: str, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.flags = flags
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = (LOG_DIR or Path(tempfile.gettempdir())) / f"wshub-test-{self.port}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "wshub", "serve", "--port", str(self.port), *self.flags]
        env = {**os.environ, **self.env}
        env.setdefault("WSHUB_LOG_LEVEL", "warning")
        env.setdefault("WSHUB_DRAIN_SECONDS", "0")  # tests that drain say how long
        self._log = self.log_path.open("ab" if self.proc is not None else "wb")  # keep on restart
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wshub exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.proc.kill()  # not left running behind a test that fails here
        self.proc.wait()
        raise RuntimeError(f"wshub did not become healthy:\n{self.log()}")

    def restart(self) -> ServerProcess:
        """Stop and start again on the same port: a new process with empty memory."""
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.interrupt()
        self.reap()

    def interrupt(self) -> None:
        """Ask the node to shut down (one SIGINT: a second one would force its exit)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def reap(self) -> None:
        """Wait for an interrupted node to exit; kill it after 10 s."""
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and not self._log.closed:
            self._log.close()


class Client:
    """A protocol client on the `websockets` library: not wshub's own client."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next_id = 0
        self.welcome: Frame = {}
        self._backlog: collections.deque[Frame] = collections.deque()

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame, including frames that :meth:`request` passed over."""
        if self._backlog:
            return self._backlog.popleft()
        return await self._read(timeout)

    async def _read(self, timeout: float) -> Frame:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
        frame: Frame = json.loads(raw)
        return frame

    async def expect(self, kind: str, timeout: float = 5.0) -> Frame:
        """The next frame, which must be of type ``kind``."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, f"expected {kind}, got {frame}"
        return frame

    async def request(self, frame: Frame, timeout: float = 5.0) -> Frame:
        """Send a frame with a fresh id and return the reply carrying that id.

        Frames that arrive before the reply are kept for :meth:`recv`.
        """
        self._next_id += 1
        frame = {**frame, "id": self._next_id}
        await self.send(frame)
        while True:
            reply = await self._read(timeout)
            if reply.get("id") == self._next_id:
                return reply
            self._backlog.append(reply)

    async def join(self, channel: str, **extra: Any) -> Frame:
        reply = await self.request({"type": "join", "channel": channel, **extra})
        assert reply["type"] == "joined", reply
        return reply

    async def publish(self, channel: str, data: Any) -> Frame:
        reply = await self.request({"type": "publish", "channel": channel, "data": data})
        assert reply["type"] == "ack", reply
        return reply

    async def messages(self, count: int, timeout: float = 10.0) -> list[Frame]:
        """The next ``count`` ``message`` frames, skipping anything else."""
        got: list[Frame] = []
        while len(got) < count:
            frame = await self.recv(timeout)
            if frame["type"] == "message":
                got.append(frame)
        return got

    async def close(self) -> None:
        await self.ws.close()


@contextlib.asynccontextmanager
async def connect(
    base: str, user: str | None = None, *, token: str | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    query = {k: v for k, v in (("user", user), ("token", token)) if v}
    url = f"{base}/ws" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    kwargs.setdefault("close_timeout", 1)  # peers the tests cut off must not hold them up
    async with websockets.connect(url, **kwargs) as ws:
        client = Client(ws)
        client.welcome = await client.expect("welcome")
        yield client


async def http_get(url: str) -> tuple[int, bytes]:
    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    return await asyncio.to_thread(fetch)


class RedisProcess:
    """A real ``redis-server`` on a free port, without persistence; restartable on that port."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def serve_refused(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``wshub serve`` with settings that must stop it at start; its exit and output.

    Nothing else is in its environment, so the test's own ``WSHUB_*`` variables cannot leak in.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "wshub", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": "", **env},
    )
    assert proc.returncode != 0, proc.stdout
    return proc


@contextlib.asynccontextmanager
async def uvicorn_in_process(app: Any, **options: Any) -> AsyncIterator[Any]:
    """Serve an ASGI app with uvicorn in this event loop, on a free port, with ``options``
    for its ``Config`` (``ws=WshubTransport``, ...); yields the started ``uvicorn.Server``."""
    import uvicorn

    options = {"log_level": "warning", **options}
    server = uvicorn.Server(uvicorn.Config(app, port=free_port(), **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve_in_process(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with stock uvicorn in this event loop; yields ``host:port``."""
    async with uvicorn_in_process(app, lifespan="on") as server:
        yield f"127.0.0.1:{server.config.port}"
