"""`--workers 2`: every /metrics scrape reports the whole server, the supervisor owns the
prometheus-client folder, and the dashboard names nodes as clients see them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from pathlib import Path

from tests.conftest import ServerFactory
from tests.support import Client, RedisProcess, connect, http_get
from tests.test_observability import metric


async def test_two_workers_one_consistent_scrape_and_one_name_per_node(
    make_server: ServerFactory, redis: RedisProcess, tmp_path: Path
) -> None:
    node = make_server(
        "--workers", "2", "--broker", redis.url, "--api-key", "k" * 20, TMPDIR=str(tmp_path)
    )
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        seen: set[str] = set()
        while len(seen) < 2 or len(clients) < 6:  # connections on both workers
            client = await stack.enter_async_context(connect(node.url, f"w{len(clients)}"))
            clients.append(client)
            seen.add(client.welcome["server"]["node"])
            assert len(clients) < 200, "every connection landed on one worker"
        for _ in range(12):  # each scrape is a new connection: any worker answers
            status, body = await http_get(f"{node.http}/metrics")
            assert status == 200
            assert metric(body.decode(), "wshub_connections") == len(clients)
        (folder,) = await asyncio.to_thread(lambda: list(tmp_path.glob("wshub-metrics-*")))
        assert await asyncio.to_thread(lambda: list(folder.glob("*.db")))

        def admin_stats() -> list[str]:
            request = urllib.request.Request(
                f"{node.http}/admin/stats", headers={"Authorization": "apikey " + "k" * 20}
            )
            with urllib.request.urlopen(request, timeout=5) as resp:
                return sorted(n["node"] for n in json.loads(resp.read())["nodes"])

        async with asyncio.timeout(15):  # each node shares its figures every 2 s
            while (names := await asyncio.to_thread(admin_stats)) != sorted(seen):
                await asyncio.sleep(0.2)
        assert names == sorted(seen)
    await asyncio.to_thread(node.stop)
    left = await asyncio.to_thread(lambda: list(tmp_path.glob("wshub-metrics-*")))
    assert not left, "the supervisor left its folder"
