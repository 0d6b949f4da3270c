"""A Redis Cluster of one master and no replica: what a managed "cluster mode" offering of one
shard looks like. Every slot on one shard; the protocol holds the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import RedisCluster
from tests.test_redis import (  # noqa: F401
    test_direct_presence_events_and_history_across_nodes,
    test_three_nodes_200_messages_one_offset_sequence,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisCluster]:
    cluster = RedisCluster(masters=1, replicas=0).start()
    yield cluster
    cluster.stop()


def test_one_master_serves_every_slot(redis: RedisCluster) -> None:
    assert redis.master_ports() == redis.ports
