"""The dashboard's sampler ends when the app shuts down, even on Redis.

redis-py 8.1 swallows a cancellation that lands inside a pipeline's ``execute`` about one time
in three. The sampler shares this node's figures through one; stopped with a single
``cancel()`` it ran on, the app's lifespan never ended, and a ``wshub serve --workers 2`` on
Redis with a few thousand connections hung on SIGTERM (``/readyz`` unanswered, the supervisor
waiting for its worker for ever). A real redis-server; the cancellation lands at staggered
moments of a sampler that shares without pause.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support import RedisProcess
from wshub import Hub
from wshub.app import dashboard

TRIES = 60


async def test_the_sampler_stops_wherever_the_cancellation_lands_in_a_redis_command(
    redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "SHARE_SECONDS", 0.0)  # a share on every pass
    hub = Hub(redis.url)
    await hub.start()
    try:
        for i in range(TRIES):
            sampler = asyncio.create_task(dashboard.sample_queues(hub, time.monotonic(), 0.0))
            await asyncio.sleep((i % 20) * 0.00025)  # somewhere in a share, or between two
            stopping = asyncio.create_task(dashboard.stop_sampler(sampler))
            await asyncio.wait([stopping], timeout=5)
            assert sampler.done(), f"try {i}: the sampler ran on after its cancellation"
            assert stopping.done()
    finally:
        await hub.stop()
