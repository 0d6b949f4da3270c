"""A Redis Cluster of one master and no replica: what a managed "cluster mode" offering of one
shard looks like. Every slot on one shard; the protocol holds the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import RedisCluster
from tests.conftest import ServerFactory
from tests.support import connect
from tests.test_redis import (  # noqa: F401
    test_direct_presence_events_and_history_across_nodes,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisCluster]:
    cluster = RedisCluster(masters=1, replicas=0).start()
    yield cluster
    cluster.stop()


def test_one_master_serves_every_slot(redis: RedisCluster) -> None:
    assert redis.master_ports() == redis.ports


def test_a_cluster_url_names_its_shards_with_its_scheme_and_password() -> None:
    from wshub.brokers.redis.link import cluster_client, shard_url

    url = "rediss+cluster://:p%40ss@10.0.0.1:7000,10.0.0.2"
    assert shard_url(url, "10.0.0.9", 7001) == "rediss://:p%40ss@10.0.0.9:7001/0"
    assert shard_url("redis+cluster://h:1", "h", 2) == "redis://h:2/0"
    client = cluster_client(url, 2.0)
    assert sorted(client.nodes_manager.startup_nodes) == ["10.0.0.1:7000", "10.0.0.2:6379"]
    kwargs = client.nodes_manager.connection_kwargs
    assert kwargs["password"] == "p@ss"
    assert kwargs["connection_class"].__mro__[2].__name__ == "SSLConnection"


async def test_a_password_in_the_cluster_url(make_server: ServerFactory) -> None:
    secured = RedisCluster(masters=1, replicas=0, password="s3cret").start()
    try:
        good = make_server("--broker", secured.url)
        async with connect(good.url) as client:
            assert (await client.publish("locked", 1))["offset"] == 1
        bad = make_server(
            "--broker", secured.url.replace("s3cret", "wrong"), "--broker-timeout", "2"
        )
        async with connect(bad.url) as client:
            reply = await client.request({"type": "publish", "channel": "locked", "data": 1})
            assert reply["code"] == "unavailable"
        assert "s3cret" not in good.log() and "wrong" not in bad.log()
        # Refused, the router backs off and tries again (its first failure is logged by then),
        # rather than ending and being restarted at once, in a loop.
        assert "is unreachable" in bad.log()
        assert "listener stopped" not in bad.log()
    finally:
        secured.stop()
