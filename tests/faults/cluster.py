"""Two real ``wshub serve`` nodes on one real Redis, each behind its own TCP proxy, with small
timeouts so that every fault plays out in seconds; and the record of what each fault cost."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.conftest import ServerFactory
from tests.faults.actors import Publisher, Subscriber
from tests.proxy import TcpProxy
from tests.support import RedisProcess, ServerProcess
from wshub.protocol import ErrorCode

BROKER_TIMEOUT = 2.0
PRESENCE_TTL = 6.0
API_KEY = "faults-key"
SUBSCRIBERS_PER_NODE = 3
LINK_LOST = "Redis pub/sub connection lost"
TELLS_TIMEOUT = any(code.value == "timeout" for code in ErrorCode)
"""Whether the hub answers a command that the broker took but did not confirm with
``timeout`` (protocol version 2); from then on no ``unavailable`` may be a publication."""
REPORT = Path(os.environ.get("WSHUB_FAULT_REPORT", Path(os.environ.get("TMPDIR", "/tmp"))))


class Cluster:
    def __init__(self, redis: RedisProcess, make_server: ServerFactory) -> None:
        self.redis = redis
        self.make_server = make_server
        self.proxies: list[TcpProxy] = []
        self.nodes: list[ServerProcess] = []
        self.channel = f"faults:{uuid.uuid4().hex[:8]}"
        self.subscribers: list[Subscriber] = []
        self.publisher: Publisher | None = None
        self.direct = aioredis.Redis(port=redis.port)
        """Straight to Redis, past the proxies: the operator's (and the fault's) own link."""

    async def start(self, nodes: int = 2) -> Cluster:
        for _ in range(nodes):
            proxy = await TcpProxy(self.redis.port).start()
            self.proxies.append(proxy)
            flags = (
                *("--broker", f"redis://127.0.0.1:{proxy.port}/0"),
                *("--broker-timeout", str(BROKER_TIMEOUT)),
                *("--presence-ttl", str(PRESENCE_TTL)),
                *("--history-size", "5000"),
                *("--api-key", API_KEY),
            )
            node = await asyncio.to_thread(self.make_server, *flags)
            self.nodes.append(node)
        return self

    async def close(self) -> None:
        for sub in self.subscribers:
            await sub.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        for proxy in self.proxies:
            await proxy.close()
        await self.direct.aclose()

    # --- clients ----------------------------------------------------------------------------

    async def subscribe(self) -> list[Subscriber]:
        """Subscribers on every node; each falls back to the other node if its own is gone."""
        for n, node in enumerate(self.nodes):
            others = [x.url for x in self.nodes if x is not node]
            for j in range(SUBSCRIBERS_PER_NODE):
                sub = Subscriber(f"s{n}-{j}", [node.url, *others], self.channel)
                self.subscribers.append(sub.start())
        await wait_for(lambda: all(s.joined.is_set() for s in self.subscribers), 15)
        return self.subscribers

    def publish(self, node: int = 0, rate: float = 25) -> Publisher:
        self.publisher = Publisher(self.nodes[node].url, self.channel, rate).start()
        return self.publisher

    def everyone_has(self, wanted: list[int]) -> bool:
        return all(set(wanted) <= s.seen for s in self.subscribers)

    async def flowing(self, timeout: float = 15) -> float:
        """Wait until a publication acknowledged from now on reached every subscriber; the
        seconds it took."""
        assert self.publisher is not None
        since = time.monotonic()
        await wait_for(
            lambda: (
                bool(self.publisher and self.publisher.acked_after(since))
                and self.everyone_has(self.publisher.acked_after(since)[:1])
            ),
            timeout,
        )
        return time.monotonic() - since

    # --- the nodes, seen from outside -------------------------------------------------------

    async def ready(self, n: int) -> bool:
        status, _ = await http(self.nodes[n].port, "/readyz")
        return status == 200

    async def until_ready(self, n: int, want: bool, timeout: float) -> float:
        """Seconds until node ``n``'s /readyz says ``want`` (polled every 50 ms)."""
        started = time.monotonic()
        while await self.ready(n) != want:
            assert time.monotonic() - started < timeout, f"node {n} ready != {want}"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def stats(self, n: int) -> dict[str, Any]:
        """Node ``n``'s own figures from /admin/stats (tasks, RSS, connections)."""
        node = self.nodes[n]
        assert node.proc is not None
        _, body = await http(node.port, "/admin/stats", API_KEY)
        (mine,) = [s for s in json.loads(body)["nodes"] if s.get("pid") == node.proc.pid]
        return dict(mine)

    @contextlib.asynccontextmanager
    async def watching(self, n: int) -> AsyncIterator[list[float]]:
        """Poll node ``n``'s /readyz meanwhile; yields the moments it said 503."""
        unready: list[float] = []

        async def poll() -> None:
            while True:
                if not await self.ready(n):
                    unready.append(time.monotonic())
                await asyncio.sleep(0.05)

        task = asyncio.create_task(poll())
        try:
            yield unready
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def logged(self, n: int, text: str, since: float) -> float | None:
        """Seconds from ``since`` (``time.time()``) to node ``n``'s first log line after it
        that contains ``text``; None if there is none (yet)."""
        for line in self.nodes[n].log().splitlines():
            if text in line:
                with contextlib.suppress(ValueError):
                    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                    if stamp.timestamp() >= since:
                        return stamp.timestamp() - since
        return None

    async def detected(self, n: int, since: float, timeout: float) -> float:
        """Seconds until node ``n`` logged that its pub/sub link was lost."""
        await wait_for(lambda: self.logged(n, LINK_LOST, since) is not None, timeout)
        seconds = self.logged(n, LINK_LOST, since)
        assert seconds is not None
        return seconds

    def signal(self, n: int, sig: signal.Signals) -> None:
        proc = self.nodes[n].proc
        assert proc is not None
        proc.send_signal(sig)

    def kill(self, n: int) -> None:
        proc = self.nodes[n].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def freeze_redis(self) -> None:
        assert self.redis.proc is not None
        self.redis.proc.send_signal(signal.SIGSTOP)

    def thaw_redis(self) -> None:
        assert self.redis.proc is not None
        self.redis.proc.send_signal(signal.SIGCONT)

    async def redis_ms(self) -> int:
        seconds, micros = await self.direct.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def beaten_since(self, moment_ms: int) -> bool:
        """Whether every live node has recorded a heartbeat after ``moment_ms`` (Redis' clock)."""
        scores: list[Any] = await self.direct.zrange("wshub:nodes", 0, -1, withscores=True)
        return len(scores) == len(self.nodes) and all(s > moment_ms for _, s in scores)

    async def members(self) -> dict[str, int]:
        """User -> connections in the channel's presence, read from the first node."""
        reply = await ask(self.nodes[0].url, {"type": "presence", "channel": self.channel})
        return {m["user"]: m["connections"] for m in reply.get("members", [])}


async def wait_for(check: Any, timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(every)


async def http(port: int, path: str, api_key: str | None = None) -> tuple[int, bytes]:
    def fetch() -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if api_key:
            request.add_header("Authorization", f"apikey {api_key}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    return await asyncio.to_thread(fetch)


async def ask(url: str, frame: dict[str, Any]) -> dict[str, Any]:
    import websockets

    async with websockets.connect(f"{url}/ws?user=observer", close_timeout=1) as ws:
        await ws.recv()
        await ws.send(json.dumps({**frame, "id": "q"}))
        while True:
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if reply.get("id") == "q":
                return reply


@contextlib.asynccontextmanager
async def cluster(redis: RedisProcess, make_server: ServerFactory) -> AsyncIterator[Cluster]:
    c = await Cluster(redis, make_server).start()
    try:
        yield c
    finally:
        await c.close()


def record(fault: str, **figures: Any) -> None:
    """Add one fault's measured figures to the suite's report (a JSON file), and print them."""
    path = REPORT / "wshub-faults.json" if REPORT.is_dir() else REPORT
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
    data[fault] = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n[fault] {fault}: {data[fault]}")


async def outcome(
    c: Cluster, before: list[dict[str, Any]], peer_gone: bool = False
) -> dict[str, Any]:
    """Stop publishing, let every acknowledged publication arrive, and check the rules:
    each subscriber got every acknowledged publication in offset order or was told (a rejoin
    answered ``recovered: false``); every frame got a reply; no connection ended without a
    close frame (unless ``peer_gone``: its node was killed); tasks and memory stayed bounded.
    Returns what a client saw, for the report."""
    pub = c.publisher
    assert pub is not None
    await pub.stop()
    acked = set(pub.acked)
    await wait_for(lambda: all(acked <= s.seen or s.told for s in c.subscribers), 20)
    for sub in c.subscribers:
        assert not sub.violations, sub.violations
        if not sub.told:
            assert acked <= sub.seen, (sub.user, sorted(acked - sub.seen)[:10])
        if not peer_gone:
            assert None not in sub.closes, (sub.user, sub.closes)
    assert pub.unanswered == 0, "a publish got no reply"
    if TELLS_TIMEOUT:  # "unavailable" means it was not published
        for sub in c.subscribers:
            assert not pub.refused & sub.seen, (sub.user, sorted(pub.refused & sub.seen))
    after = {n: await c.stats(n) for n in range(len(c.nodes)) if c.nodes[n].proc.poll() is None}  # type: ignore[union-attr]
    for n, now in after.items():
        then = before[n]
        grown = max(0, now["connections"] - then["connections"])
        assert now["tasks"] <= then["tasks"] + 4 * grown + 10, (then, now)
        assert now["rss_bytes"] - then["rss_bytes"] < 64 * 2**20, (then, now)
    closes = [code for s in c.subscribers for code in s.closes]
    return {
        "acked": len(acked),
        "publish_errors": dict(pub.errors),
        "slowest_reply_s": pub.slowest,
        "subscriber_closes": {str(code): closes.count(code) for code in set(closes)},
        "told_recovered_false": sum(s.told for s in c.subscribers),
        "lost_untold": 0,
    }
