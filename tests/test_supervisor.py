"""``wshub serve --workers N``'s supervisor, with real processes: it always exits after a
signal (a frozen worker is killed past ``--drain-seconds`` plus ``--shutdown-grace``, and that
is exit 1), exits 0 without a kill when its workers drain, and replaces a worker that dies
while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support import RedisProcess, ServerProcess, connect

pytestmark = pytest.mark.slow  # real supervisors, workers and Redis


def workers_of(supervisor: int) -> list[int]:
    """The supervisor's worker processes; multiprocessing's resource tracker left out."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    workers = []
    for child in children:
        with contextlib.suppress(FileNotFoundError):  # it may have just exited
            if b"--multiprocessing-fork" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
    return sorted(workers)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process, a zombie that nobody reaped included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def no_strays(pids: list[int]) -> Iterator[None]:
    """A worker left frozen by a failed test would outlive it: kill what is left."""
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def serving_workers(srv: ServerProcess, count: int) -> AsyncIterator[list[int]]:
    """Wait until ``count`` workers each took a connection (so each is past its start and has
    its signal handler); their pids."""
    assert srv.proc is not None
    async with contextlib.AsyncExitStack() as stack:
        nodes: set[str] = set()
        deadline = time.monotonic() + 30
        while len(nodes) < count:
            assert time.monotonic() < deadline, f"{count} workers should take connections"
            client = await stack.enter_async_context(connect(srv.url, f"u{len(nodes)}"))
            nodes.add(client.welcome["server"]["node"])
        pids = workers_of(srv.proc.pid)
        assert len(pids) == count, pids
        yield pids


async def exit_within(srv: ServerProcess, seconds: float) -> tuple[int, float]:
    """Wait for the supervisor's exit, up to ``seconds``; its code and how long it took."""
    assert srv.proc is not None
    started = time.monotonic()
    code = await asyncio.wait_for(asyncio.to_thread(srv.proc.wait), seconds)
    return code, time.monotonic() - started


async def test_a_frozen_worker_is_killed_after_the_grace_and_the_supervisor_exits_1(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    grace = 2.0  # --drain-seconds 0 (the tests' default) plus --shutdown-grace
    srv = make_server("--broker", redis.url, "--workers", "2", "--shutdown-grace", str(grace))
    assert srv.proc is not None
    async with serving_workers(srv, 2) as (frozen, healthy):
        pass
    with no_strays([frozen, healthy]):
        os.kill(frozen, signal.SIGSTOP)  # a real frozen process: it cannot see the SIGTERM
        srv.proc.send_signal(signal.SIGTERM)
        code, took = await exit_within(srv, grace + 30)
        assert code == 1, srv.log()
        assert took >= grace  # not killed before its time
        assert not alive(frozen)  # killed and reaped
        assert not alive(healthy)
    log = srv.log()
    assert f"worker {frozen} did not exit within {grace:g} s" in log, log
    assert "SIGKILL" in log
    assert f"worker {healthy} did not exit" not in log  # it drained and exited by itself


async def test_workers_that_drain_exit_0_without_a_kill(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    srv = make_server("--broker", redis.url, "--workers", "2", "--shutdown-grace", "20")
    assert srv.proc is not None
    async with serving_workers(srv, 2) as pids:
        srv.proc.send_signal(signal.SIGTERM)
        code, _ = await exit_within(srv, 30)
    assert code == 0, srv.log()
    assert not any(alive(pid) for pid in pids)
    assert "SIGKILL" not in srv.log()


async def test_a_worker_that_dies_is_replaced(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    srv = make_server("--broker", redis.url, "--workers", "2")
    assert srv.proc is not None
    async with serving_workers(srv, 2) as pids:
        pass
    os.kill(pids[0], signal.SIGKILL)  # as the kernel's OOM killer would
    deadline = time.monotonic() + 20
    while len(now := workers_of(srv.proc.pid)) < 2 or pids[0] in now:
        assert time.monotonic() < deadline, f"no worker replaced {pids[0]}: {now}"
        await asyncio.sleep(0.05)
    assert pids[1] in now  # the other one kept running
    assert f"worker {pids[0]} died (exit -9): starting another" in srv.log()
    async with serving_workers(srv, 2):  # the new one serves on the same port
        srv.proc.send_signal(signal.SIGTERM)
        code, _ = await exit_within(srv, 30)
    assert code == 0, srv.log()
