"""A message on a channel's Redis pub/sub that is not a publication (another program, or a
different wshub version, writing to the same keys) is logged and skipped: the stream goes on.
A real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from tests.support import RedisProcess
from tests.test_hub import Peer
from wshub import Hub


async def test_a_malformed_pub_sub_message_is_logged_and_the_next_publication_arrives(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(redis.url)
    await hub.start()
    raw = aioredis.from_url(redis.url)
    try:
        a = Peer(hub, "a")
        assert (await a.say({"type": "join", "channel": "c"}))["type"] == "joined"
        with caplog.at_level("ERROR"):
            assert await raw.publish("wshub:{c}:pub", b"mnot a publication") == 1
            await hub.publish("c", "fine")
            async with asyncio.timeout(5):
                while not a.link.of_type("message"):
                    await asyncio.sleep(0.01)
        assert [m["data"] for m in a.link.of_type("message")] == ["fine"]
        assert "failed to deliver a message from Redis" in caplog.text
        assert a.link.closed is None
    finally:
        await raw.aclose()
        await hub.stop()
