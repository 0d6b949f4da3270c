from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import support
from tests.support import RedisProcess, ServerProcess

ServerFactory = Callable[..., ServerProcess]

# The modules that take longest on two workers (their wall time waits on real servers, Redis
# Clusters and Chromium), longest first; the rest follow in file order. pytest-xdist's loadfile
# keeps a module on one worker and hands modules out in collection order, so starting with the
# longest lets the other worker fill in with the short ones and both finish together, instead
# of one long module starting last while the other worker sits idle (`make test` passes
# --no-loadscope-reorder, which would put the modules with the most tests first). Only the
# order: a stale entry costs balance, never a test.
LONGEST_FIRST = (
    "test_docs",
    "test_faults_redis",
    "test_redis",
    "test_state_caps",
    "test_bench",
    "test_delivery",
    "test_stalls",
    "test_sse_browser",
    "test_drain",
    "test_cluster_one",
    "test_channel_types",
    "test_bench_auth",
    "test_cluster",
    "test_client_stops",
    "test_client_grants",
    "test_identity_closes",
    "test_config_roundtrip",
    "test_browser",
    "test_observability",
    "test_limits",
    "test_js_package",
    "test_client",
    "test_cluster_failover",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {f"tests/{name}.py": n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


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
    for proc in started:  # all at once: each node takes a moment to shut down
        proc.interrupt()
    for proc in started:
        proc.reap()


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
