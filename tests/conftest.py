from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import support
from tests.support import RedisProcess, ServerProcess

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session", autouse=True)
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Server logs go to pytest's temporary folder, not the system's (pytest prunes its own)."""
    path = tmp_path_factory.mktemp("server-logs")
    support.LOG_DIR = path
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A wshub node with default settings, shared by a test module."""
    proc = ServerProcess().start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start wshub nodes with custom flags; all are stopped after the test."""
    started: list[ServerProcess] = []

    def make(*flags: str, **env: str) -> ServerProcess:
        proc = ServerProcess(*flags, env=env).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    """A real redis-server of its own for one test."""
    proc = RedisProcess().start()
    yield proc
    proc.stop()


@pytest.fixture(params=["fast", "asgi"])
def write_path(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Server flags for each way of writing frames: wshub's fast path, and plain ASGI sends."""
    return () if request.param == "fast" else ("--no-fast-path",)
