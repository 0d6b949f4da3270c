"""``GET /sse`` through Debian's nginx with the configuration of docs/deploy.md: each event
comes through as it is sent, not when a proxy buffer fills; and a resume through the proxy
lands on whichever node it reaches."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.sse_support import sse
from tests.support import RedisProcess, connect, free_port
from tests.test_deploy import documented_config, nginx, render

pytestmark = pytest.mark.slow  # real nginx and nodes


async def test_events_come_through_nginx_one_by_one_and_resume_there(
    make_server: ServerFactory, redis: RedisProcess, tmp_path: Path
) -> None:
    a = make_server("--broker", redis.url)
    b = make_server("--broker", redis.url)
    site = render(documented_config(), a.port, b.port, free_port())
    channel = f"px:{uuid.uuid4().hex[:8]}"
    with nginx(site, tmp_path) as port:
        proxy = f"http://127.0.0.1:{port}"
        async with connect(a.url, "writer") as writer:
            async with sse(proxy, channel) as stream:
                await stream.until("joined")
                # One small event at a time: each must come through before the next is sent,
                # which a buffering proxy would hold until its buffer filled or the stream ended.
                for n in range(3):
                    await writer.publish(channel, n)
                    (message,) = await stream.messages(1, timeout=5)
                    assert message.data["data"] == n
                last = stream.last_id
            await writer.publish(channel, "missed")
            async with sse(proxy, channel, headers={"Last-Event-ID": last or ""}) as stream:
                joined = await stream.until("joined")
                (missed,) = await stream.messages(1)
            assert (joined.data["recovered"], missed.data["data"]) == (True, "missed")
