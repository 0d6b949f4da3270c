"""The operator's view: ``/admin`` (a static page) and ``/admin/stats`` (its JSON, API key only).

The page holds no data; every figure comes from ``/admin/stats``, which answers only to
``Authorization: apikey KEY``. Counters are cumulative, so any number of dashboards can poll
without the server keeping per-viewer state: each one turns two polls into a rate itself.

The stats are a list of nodes: every node shares its figures through the broker every
:data:`SHARE_SECONDS` (they expire after three periods), so with Redis any node's dashboard shows
the whole cluster, and a node that died drops off by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Security
from fastapi.responses import JSONResponse

from wshub.app.api_key import ApiKey
from wshub.app.hub import Hub
from wshub.brokers import BrokerUnavailable

__all__ = [
    "CHANNELS_SHOWN",
    "admin_router",
    "node_stats",
    "process_stats",
    "sample_queues",
]

CHANNELS_SHOWN: Final = 200
"""Channels listed in the stats, busiest first; ``channels_total`` says how many exist."""

log = logging.getLogger("wshub.app.dashboard")

SHARE_SECONDS: Final = 2.0


def node_stats(hub: Hub, started: float, queues: tuple[int, int]) -> dict[str, Any]:
    """This node's figures; counters are totals since start."""
    m = hub.metrics
    return {
        # The id clients see in welcome.server.node: one name for a node everywhere.
        "node": hub.node,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "broker": hub.broker_url.partition("://")[0],
        "uptime": round(time.monotonic() - started, 1),
        "connections": hub.connection_count,
        "sse_streams": m.sse_streams,
        "users": hub.user_count,
        "channels": len(hub.channel_counts()),
        "connections_opened": m.connections_opened,
        "joins": m.joins,
        "published": m.published,
        "fanned_out": m.fanned_out_total,
        "direct_sent": m.direct_sent,
        "direct_fanned_out": m.direct_fanned_out_total,
        "slow_consumers": m.slow_consumers,
        "errors": dict(m.errors),
        "refused": dict(m.refused),
        "queued": queues[0],
        "queue_max": queues[1],
        **process_stats(),
    }


def process_stats() -> dict[str, int | None]:
    """Leak indicators for soak tests and operators: asyncio tasks, open file descriptors and
    resident memory of this process (None where /proc is not available)."""
    fds: int | None = None
    rss: int | None = None
    with contextlib.suppress(OSError):
        fds = len(os.listdir("/proc/self/fd"))
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return {"tasks": len(asyncio.all_tasks()), "fds": fds, "rss_bytes": rss}


async def sample_queues(hub: Hub, started: float, every: float = 1.0) -> None:
    """Keep the queue-depth gauges fresh: once a second, one pass over the connections; and
    share this node's figures with the cluster every :data:`SHARE_SECONDS`."""
    last_shared = 0.0
    while True:
        try:
            queues = hub.metrics.sample_queues(hub.queue_depths())
            now = time.monotonic()
            if now - last_shared >= SHARE_SECONDS and hub.serving:
                last_shared = now
                stats = json.dumps(node_stats(hub, started, queues)).encode()
                with contextlib.suppress(BrokerUnavailable):
                    await hub.ops.share_stats(hub.node, stats, 3 * SHARE_SECONDS)
        except Exception:  # the gauges must keep going: log, and sample again next time
            log.exception("sampling the dashboard's figures failed")
        await asyncio.sleep(every)


async def stop_sampler(sampler: asyncio.Task[None]) -> None:
    """Cancel the sampler until it ends. redis-py 8.1 swallows a cancellation that lands in a
    pipeline's ``execute`` (:meth:`share_stats`) about one time in three: awaited after one
    ``cancel()``, the sampler ran on and the app's shutdown never ended (with Redis, a node
    stopped answering and its supervisor waited for it for ever)."""
    while not sampler.done():
        sampler.cancel()
        await asyncio.wait([sampler], timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        sampler.result()


def admin_router(hub: Hub, api_key: str | None) -> APIRouter:
    started = time.monotonic()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sampler = asyncio.create_task(sample_queues(hub, started))
        try:
            yield
        finally:
            await stop_sampler(sampler)

    router = APIRouter(lifespan=lifespan)

    @router.get("/admin/stats", tags=["operations"], dependencies=[Security(ApiKey(api_key))])
    async def stats() -> JSONResponse:
        """Live figures for the dashboard. Requires `Authorization: apikey KEY`."""
        queues = hub.metrics.sample_queues(hub.queue_depths())
        here = node_stats(hub, started, queues)
        try:
            channels = await hub.ops.channels()
            shared = [json.loads(raw) for raw in await hub.ops.cluster_stats()]
        except BrokerUnavailable:
            channels, shared = {}, []
        # This node's own figures are always fresh; the others' are at most a period old.
        nodes = [here, *(n for n in shared if n.get("node") != hub.node)]
        busiest = sorted(channels.items(), key=lambda kv: (-kv[1], kv[0]))[:CHANNELS_SHOWN]
        return JSONResponse(
            {
                "time": int(time.time() * 1000),
                "nodes": sorted(nodes, key=lambda n: str(n.get("node"))),
                "channels": [{"channel": name, "subscribers": n} for name, n in busiest],
                "channels_total": len(channels),
            }
        )

    return router
