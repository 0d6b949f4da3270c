"""Running a node under uvicorn: a graceful drain on SIGTERM/SIGINT, and worker processes.

uvicorn's own shutdown closes the listening socket and every WebSocket at once (1012), then
runs the lifespan. A hub wants the opposite order: keep answering (new handshakes get 503,
``/readyz`` says 503 so a balancer moves on), flush and close its clients with 1001 in batches
over ``--drain-seconds``, and only then let uvicorn close the sockets and the lifespan leave
the cluster. :class:`DrainingServer` does that by taking over uvicorn's signal handler; a
second signal falls back to uvicorn's forced exit.

With ``--workers N`` a small supervisor binds the port once, starts N spawned processes that
each run a :class:`DrainingServer` on the shared socket, and forwards each signal it receives
to them: each worker drains itself. Workers sit in their own process group, so a terminal's
Ctrl+C reaches them once, through the supervisor, and not twice. A worker still running
``--drain-seconds`` plus ``--shutdown-grace`` after the first signal is killed, so that the
supervisor always exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from types import FrameType
from typing import Any

import uvicorn

from wshub import __version__
from wshub.app.hub import Hub
from wshub.cli.logs import log_config
from wshub.cli.options import ServeConfig, token_verifier
from wshub.transport.owned import WshubTransport
from wshub.transport.uvicorn_http import http_protocol
from wshub.transport.uvicorn_internals import check_uvicorn

__all__ = ["DrainingServer", "run"]

log = logging.getLogger("wshub.cli.node")

FORCED_EXIT = 1
STARTUP_FAILURE = 3  # uvicorn's exit code when a server could not start


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains its hub before uvicorn's own shutdown begins."""

    def __init__(
        self, config: uvicorn.Config, hub: Hub, drain_seconds: float, parent: int | None = None
    ) -> None:
        super().__init__(config)
        self.hub = hub
        self.drain_seconds = drain_seconds
        self.parent = parent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and self.parent is None:  # with workers, the supervisor says it once
            log.info("%s", self.startup_line)

    startup_line = ""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: it records the signal and raises it again after shutdown, so the
        # process would die of it instead of exiting 0 after a clean drain.
        if self.should_exit or self._drain is not None:
            log.warning("second signal (%s): exiting now", signal.Signals(sig).name)
            self.force_exit = True
            self.should_exit = True
            if self._drain is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._drain.cancel)
            return
        if self._loop is None or not self.started:  # still starting: nothing to drain
            self.should_exit = True
            return
        log.info(
            "%s: draining (closing clients over up to %g s); %s again to exit at once",
            signal.Signals(sig).name,
            self.drain_seconds,
            "Ctrl+C" if sig == signal.SIGINT else "a second signal",
        )
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.hub.drain(self.drain_seconds)
        finally:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        # A worker whose supervisor died (SIGKILL) drains and exits instead of lingering.
        orphaned = self.parent is not None and counter % 10 == 0 and os.getppid() != self.parent
        if orphaned and self._drain is None and not self.should_exit:
            self.parent = None
            log.warning("the supervisor is gone: draining")
            self._start_drain()
        return await super().on_tick(counter)


def uvicorn_config(config: ServeConfig, app: Any) -> uvicorn.Config:
    settings = config.settings()
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        # Limits on every request before the app sees it: see wshub.transport.uvicorn_http for why.
        http=http_protocol(config.request_limits()),
        # wshub's own WebSocket transport for /ws and /ws/{id}; uvicorn's for any other path.
        ws=WshubTransport,
        ws_max_size=settings.hard_frame_bytes,
        # Off: deflate compresses every frame once per subscriber, which defeats encoding once.
        ws_per_message_deflate=False,
        ws_ping_interval=config.ping_interval or None,
        ws_ping_timeout=config.ping_timeout or None,
        proxy_headers=config.proxy_headers,
        forwarded_allow_ips=config.forwarded_allow_ips,
        log_level=config.log_level,
        log_config=log_config(config.log_level, config.log_format),
        lifespan="on",
        # The drain already closed the clients; never wait forever for a stuck HTTP request.
        timeout_graceful_shutdown=max(5, int(settings.close_timeout) + 1),
    )


def serve_node(
    config: ServeConfig, sockets: list[socket.socket] | None = None, parent: int | None = None
) -> int:
    """Run one node until it is drained; the process's exit code."""
    from wshub.app.server import create_app
    from wshub.transport.handshake import Handshake

    verifier = token_verifier(config)
    origins = [o for o in config.allowed_origins.split(",") if o.strip()]
    hub = Hub(config.broker, config.settings())
    app = create_app(hub, Handshake(verifier, origins), config.api_key or None)
    server = DrainingServer(uvicorn_config(config, app), hub, config.drain_seconds, parent)
    server.startup_line = startup_line(config)
    if parent is None:
        warn_if_open(config)
    server.run(sockets)
    if not server.started:
        return STARTUP_FAILURE
    return FORCED_EXIT if server.force_exit else 0


def startup_line(config: ServeConfig) -> str:
    """One line with what a person starting the node wants to know: where, who may connect,
    and what it shares through."""
    from wshub.redaction import redact_url

    host = f"[{config.host}]" if ":" in config.host else config.host
    if config.jwt_secret:
        auth = "JWT (HS256 secret)"
    elif config.jwt_public_key:
        auth = f"JWT (public key {config.jwt_public_key})"
    else:
        auth = "open mode (no token: any user name)"
    workers = f", {config.workers} workers" if config.workers > 1 else ""
    api = "on" if config.api_key else "off"
    return (
        f"wshub {__version__} on http://{host}:{config.port} (chat page /, dashboard /admin): "
        f"auth {auth}, broker {redact_url(config.broker)}{workers}, HTTP API {api}"
    )


def warn_if_open(config: ServeConfig) -> None:
    """Open mode is for development: say so loudly when others can reach the node."""
    if token_verifier(config) is None and not is_loopback(config.host):
        log.warning(
            "OPEN MODE on %s: no --jwt-secret or --jwt-public-key, so anyone who can reach "
            "this address connects as any user they name and may join and publish anywhere",
            config.host,
        )


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``; a name other than localhost may not be."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(config: ServeConfig) -> int:
    """``wshub serve``: one node in this process, or a supervisor of ``workers`` processes."""
    problem = check_uvicorn()
    if problem is not None:  # before a worker starts: each would fail the same way
        print(f"error: {problem}", file=sys.stderr)
        return STARTUP_FAILURE
    if config.workers == 1:
        return serve_node(config)
    return supervise(config)


def _worker(config: ServeConfig, sock: socket.socket, parent: int) -> None:
    os.setpgrp()  # signals come from the supervisor only, once each
    sys.exit(serve_node(config, [sock], parent))


def shared_metrics_dir() -> str | None:
    """Give the workers one prometheus-client folder, so that a scrape of any of them reports
    the whole server (:mod:`wshub.app.metrics`); the folder this supervisor made, to delete at
    exit, or None when the operator set ``PROMETHEUS_MULTIPROC_DIR`` and owns it."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="wshub-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # inherited by the spawned workers
    return path


def forget_worker(pid: int | None) -> None:
    """A dead worker's live gauges (connections, queues) must not count any more."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def kill_stragglers(procs: list[multiprocessing.process.BaseProcess], grace: float) -> None:
    """SIGKILL the workers still running ``grace`` seconds after they were asked to stop."""
    for proc in procs:
        if proc.pid is None or proc.exitcode is not None:
            continue
        log.error(
            "worker %d did not exit within %g s of the signal (--drain-seconds plus "
            "--shutdown-grace): killing it (SIGKILL)",
            proc.pid,
            grace,
        )
        with contextlib.suppress(ProcessLookupError):  # it may have just exited
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)  # SIGKILL ends even a stopped process; reap it
        forget_worker(proc.pid)


def supervise(config: ServeConfig) -> int:
    """Start ``config.workers`` processes on one socket; forward signals; replace a worker
    that dies unexpectedly; exit 0 when every worker drained and exited 0, 1 when one did not
    (a worker killed for outliving the drain and ``shutdown_grace`` among them)."""
    uv = uvicorn_config(config, "wshub")  # binds the socket and configures the parent's log
    sock = uv.bind_socket()
    warn_if_open(config)
    ctx = multiprocessing.get_context("spawn")
    me = os.getpid()

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker, args=(config, sock, me), daemon=False)
        proc.start()
        return proc

    metrics_dir = shared_metrics_dir()
    procs = [start() for _ in range(config.workers)]
    signals: list[int] = []
    # A worker frozen (SIGSTOP), or stuck in its drain or a broker call, would keep the
    # supervisor waiting forever; the service manager would then kill everything unlogged.
    grace = config.drain_seconds + config.shutdown_grace
    deadline = float("inf")

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal deadline
        if not signals:
            deadline = time.monotonic() + grace
        signals.append(sig)
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):  # it may have just exited
                    os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info("supervisor %d: %s", me, startup_line(config))
    try:
        while any(p.exitcode is None for p in procs):
            time.sleep(0.2)
            if signals:
                if time.monotonic() >= deadline:
                    kill_stragglers(procs, grace)
                continue
            for i, proc in enumerate(procs):
                if proc.exitcode is None:
                    continue
                if proc.exitcode == STARTUP_FAILURE:
                    log.error("worker %s failed to start: stopping", proc.pid)
                    forward(signal.SIGTERM, None)
                    break
                log.warning("worker %s died (exit %s): starting another", proc.pid, proc.exitcode)
                forget_worker(proc.pid)
                procs[i] = start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    # A worker still importing when the signal came dies of the SIGTERM we forwarded (its
    # handler was not installed yet): it had nothing to drain, and stopped as asked.
    clean = (0, -signal.SIGTERM) if signals else (0,)
    codes = [p.exitcode for p in procs]
    if any(c == STARTUP_FAILURE for c in codes):
        return STARTUP_FAILURE
    return 0 if all(c in clean for c in codes) else FORCED_EXIT
