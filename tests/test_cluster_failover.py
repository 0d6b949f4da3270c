"""Faults of a Redis Cluster under traffic: a master killed (its replica takes over), a slot
resharded while served. Two real nodes, subscribers on each and a publisher, and the rule of
the fault suite: every acknowledged publication reaches every live subscriber in offset order,
or the subscriber is told (its resume answers ``recovered: false``); every frame gets a reply;
``unavailable`` is never a publication that was made."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis as sync_redis

from tests.cluster import RedisCluster, command
from tests.conftest import ServerFactory
from tests.faults.cluster import BROKER_TIMEOUT, Cluster, ask, outcome, record, wait_for
from tests.proxy import TcpProxy
from tests.test_redis_broker import Sink

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    # A failover takes longer than a publish retries a refused connection (about the broker
    # timeout), so that some publications surely meet the gap and answer `unavailable`.
    cluster = RedisCluster(masters=3, replicas=1, node_timeout_ms=3000).start()
    yield cluster
    cluster.stop()


class OnCluster(Cluster):
    """The fault suite's two nodes, on a Redis Cluster (no proxy: the cluster names its
    nodes' addresses itself)."""

    def __init__(self, redis: RedisCluster, make_server: ServerFactory) -> None:
        import redis.asyncio as aioredis

        self.cluster_url = redis.url
        self.make_server = make_server
        self.proxies: list[TcpProxy] = []
        self.nodes = []
        self.channel = f"faults:{time.monotonic_ns()}"
        self.subscribers = []
        self.publisher = None
        self.direct = aioredis.Redis(port=redis.ports[0])

    async def start(self, nodes: int = 2) -> OnCluster:
        for _ in range(nodes):
            flags = (
                *("--broker", self.cluster_url),
                *("--broker-timeout", str(BROKER_TIMEOUT)),
                *("--presence-ttl", "6"),
                *("--history-size", "5000"),
                *("--api-key", "faults-key"),
            )
            self.nodes.append(await asyncio.to_thread(self.make_server, *flags))
        return self


async def test_a_master_killed_under_traffic_is_replaced(
    redis_cluster: RedisCluster, make_server: ServerFactory
) -> None:
    c = await OnCluster(redis_cluster, make_server).start()
    try:
        await c.subscribe()
        pub = c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        victim = redis_cluster.master_of(f"wshub:{{{c.channel}}}:meta")
        errors_before = sum(pub.errors.values())
        killed = time.monotonic()
        redis_cluster.kill(victim)
        # The nodes keep serving: publish answers while the slot has no master.
        await wait_for(lambda: sum(pub.errors.values()) > errors_before, 10)
        for node in c.nodes:
            assert (await ask(node.url, {"type": "ping"}))["type"] == "pong"
        await asyncio.to_thread(redis_cluster.wait_ok, 30)
        promoted = time.monotonic() - killed
        restored = await c.flowing(20) + (time.monotonic() - killed)
        seen = await outcome(c, before)
        record(
            "a cluster master killed (SIGKILL)",
            promoted_s=promoted,
            delivery_restored_s=restored,
            **seen,
        )
        assert set(seen["publish_errors"]) <= {"unavailable", "timeout"}, seen
        assert "unavailable" in seen["publish_errors"], seen
        assert victim not in redis_cluster.master_ports()
    finally:
        await c.close()


async def test_a_slot_resharded_while_served(
    redis_cluster: RedisCluster, make_server: ServerFactory
) -> None:
    c = await OnCluster(redis_cluster, make_server).start()
    try:
        await c.subscribe()
        c.publish(0, rate=50)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        key = f"wshub:{{{c.channel}}}:meta"
        source = redis_cluster.master_of(key)
        target = next(p for p in redis_cluster.master_ports() if p != source)
        slot = command(source, "CLUSTER", "KEYSLOT", key).strip()
        moved = time.monotonic()
        await asyncio.to_thread(_move_slot, source, target, int(slot))
        await wait_for(lambda: redis_cluster.master_of(key) == target, 10)
        restored = await c.flowing(20) + (time.monotonic() - moved)
        seen = await outcome(c, before)
        record("a cluster slot resharded", delivery_restored_s=restored, **seen)
        # The old owner dropped the subscriptions (sunsubscribe): each node placed them again.
        for node in c.nodes:
            assert "subscriptions placed again" in node.log()
        assert set(seen["publish_errors"]) <= {"unavailable", "timeout"}, seen
        assert seen["subscriber_closes"] == {}, seen  # filled from history
    finally:
        await c.close()


def _move_slot(source: int, target: int, slot: int) -> None:
    """The steps ``redis-cli --cluster reshard`` takes for one slot: IMPORTING on the target,
    MIGRATING on the source, MIGRATE its keys (clients meet ASK meanwhile), then NODE."""
    ids = {port: command(port, "CLUSTER", "MYID").strip() for port in (source, target)}
    assert (
        command(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source]).strip() == "OK"
    )
    assert (
        command(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target]).strip() == "OK"
    )
    while True:
        keys = command(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
        if not keys:
            break
        subprocess.run(
            [
                "redis-cli",
                "-p",
                str(source),
                "MIGRATE",
                "127.0.0.1",
                str(target),
                "",
                "0",
                "5000",
                "KEYS",
                *keys,
            ],
            check=True,
            capture_output=True,
            timeout=10,
        )
    for port in (target, source):
        command(port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[target])


async def test_a_publication_is_acknowledged_once_the_replica_has_it(
    redis_cluster: RedisCluster,
) -> None:
    from wshub.brokers.redis import RedisBroker
    from wshub.model.config import Settings

    for n in range(100):  # on a shard that has a replica (a failover may have used one up)
        channel = f"replicated:{n}"
        master = redis_cluster.master_of(f"wshub:{{{channel}}}:meta")
        if redis_cluster.replicas_of(master):
            break
    (replica,) = redis_cluster.replicas_of(master)
    broker = RedisBroker(redis_cluster.url, Settings(broker_timeout=2))
    await broker.start(Sink())
    try:
        with sync_redis.Redis(port=replica) as on_replica:
            on_replica.execute_command("READONLY")
            for i in range(30):
                pub = await broker.publish(channel, str(i).encode(), None)
                # Read from the replica right after the ack: the publication is there.
                last = on_replica.lrange(f"wshub:{{{channel}}}:hist", -1, -1)
                assert last and last[0].startswith(f"{pub.offset} ".encode()), (i, last)
        # A replica that does not answer holds an acknowledgement back for a quarter of the
        # broker timeout, no longer: the publication is made, on the master.
        redis_cluster.signal(replica, signal.SIGSTOP)
        try:
            started = time.monotonic()
            pub = await broker.publish(channel, b"late", None)
            assert 0.45 <= time.monotonic() - started < 1.5
            assert pub.offset == 31
        finally:
            redis_cluster.signal(replica, signal.SIGCONT)
    finally:
        await broker.close()
