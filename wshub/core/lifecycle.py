"""A node's life: started (the broker connected), draining (out of service), stopped.

Three states, three questions: ``started`` (connections can be served: ``/healthz``),
``draining`` (handshakes are refused) and ``accepting`` (started, the broker delivering, not
draining: ``/readyz``).
"""

from __future__ import annotations

import asyncio
import logging

from wshub.brokers.base import Broker, BrokerSink
from wshub.core.awaiting_auth import AwaitingAuth
from wshub.core.connection import Connection
from wshub.core.tasks import Tasks
from wshub.protocol import CloseCode

__all__ = ["DRAIN_MIN_BATCH", "DRAIN_TICK", "Lifecycle"]

log = logging.getLogger("wshub.core.hub")

DRAIN_TICK = 0.1
"""Seconds between two batches of closes while draining."""
DRAIN_MIN_BATCH = 10
"""Connections closed together at least: spreading a few clients' reconnects spares no one,
and a development node with a page or two open stops at once."""


class Lifecycle:
    __slots__ = (
        "_attached", "_broker", "_lock", "_sink", "_tasks", "awaiting_auth", "draining", "started"
    )  # fmt: skip

    def __init__(
        self,
        broker: Broker,
        sink: BrokerSink,
        attached: dict[Connection, None],
        tasks: Tasks,
    ) -> None:
        self._broker = broker
        self._sink = sink
        self._attached = attached
        self._tasks = tasks
        self.awaiting_auth = AwaitingAuth()
        """Connections waiting for their ``auth`` frame: closed by a drain or a stop too."""
        self._lock = asyncio.Lock()
        self.started = False
        self.draining = False

    async def start(self) -> None:
        async with self._lock:
            if not self.started:
                await self._broker.start(self._sink)
                self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        self.awaiting_auth.close_all()
        for conn in list(self._attached):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        self._tasks.cancel_all()
        await self._broker.close()
        self.started = False

    async def drain(self, seconds: float, close_timeout: float) -> None:
        self.draining = True
        # Nobody's yet, and never to be on this node: they go first, without the auth timeout.
        self.awaiting_auth.close_all()
        loop = asyncio.get_running_loop()
        conns = [c for c in self._attached if not c.closing]
        batches = max(1, min(len(conns) // DRAIN_MIN_BATCH, int(seconds / DRAIN_TICK)))
        spread = seconds * (batches - 1) / batches
        log.info("draining: closing %d connections with 1001 over %.1f s", len(conns), spread)
        started = loop.time()
        for i in range(batches):
            for conn in conns[i * len(conns) // batches : (i + 1) * len(conns) // batches]:
                conn.close(CloseCode.GOING_AWAY, "server draining: reconnect")
            if i + 1 < batches:
                await asyncio.sleep(max(0.0, started + (i + 1) * seconds / batches - loop.time()))
        # Connections that were mid-handshake when the drain began.
        for conn in list(self._attached):
            conn.close(CloseCode.GOING_AWAY, "server draining: reconnect")
        if not await self._all_detached(close_timeout):
            for conn in list(self._attached):
                conn.drop(CloseCode.GOING_AWAY, "server draining")
            await self._all_detached(close_timeout + 1)
        log.info("drained in %.1f s", loop.time() - started)

    async def _all_detached(self, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self._attached or self.awaiting_auth:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True
