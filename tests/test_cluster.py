"""Everything of the protocol on a real Redis Cluster (3 masters, 3 replicas): the multi-node
tests written for one Redis run again here, against ``redis+cluster://``, on one cluster for
the module (each test uses channels of its own), plus what only a cluster has: keys laid out by
slot, and sharded pub/sub that touches only the channel's shard."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.cluster import RedisCluster, command
from tests.support import ServerProcess, connect

# The multi-node tests of one Redis, collected again here: their `redis` fixture is this
# module's cluster (only `.url` is used), their `api_server` a node on it. Collected first
# (pytest keeps the module's order), the dashboard test runs before the API tests start their
# node, which stays for the module and would be a third one on the dashboard.
# isort: off
from tests.test_redis import test_the_dashboard_shows_every_node  # noqa: F401
from tests.test_api import (  # noqa: F401
    KEY,
    api,
    test_channels_and_presence,
    test_disconnect_closes_every_connection_of_the_user_with_1008,
    test_history_pages_with_since_and_epoch,
    test_publish_with_an_idempotency_key_is_made_once,
    test_send_reaches_every_connection_of_the_user,
)
from tests.test_redis import (  # noqa: F401
    test_a_killed_node_leaves_presence_within_its_ttl,
    test_direct_presence_events_and_history_across_nodes,
    test_recovery_on_another_node,
    test_three_nodes_200_messages_one_offset_sequence,
)
from tests.test_subscriptions import (  # noqa: F401
    test_api_subscribe_reaches_the_users_connections_on_every_node,
)
# isort: on

pytestmark = pytest.mark.slow  # a real cluster and several nodes


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisCluster]:
    """One cluster for the module, under the name the imported tests ask for."""
    cluster = RedisCluster(masters=3, replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def empty(redis: RedisCluster) -> None:
    """Each test starts on an empty cluster, as the tests written for one Redis each start on
    a Redis of their own: no figures of nodes that earlier tests stopped, for one."""
    for port in redis.master_ports():
        redis.cmd(port, "FLUSHALL")


@pytest.fixture(scope="module")
def api_server(redis: RedisCluster) -> Iterator[ServerProcess]:
    proc = ServerProcess("--broker", redis.url, env={"WSHUB_API_KEY": KEY}).start()
    yield proc
    proc.stop()


def test_the_cluster_has_three_masters_each_with_a_replica(redis: RedisCluster) -> None:
    assert len(redis.master_ports()) == 3
    replicas = [n for n in redis.nodes() if "slave" in n[2]]
    assert len(replicas) == 3


async def test_a_channels_keys_share_one_slot_and_its_messages_one_shard(
    redis: RedisCluster, api_server: ServerProcess
) -> None:
    channel = "slots:one"
    async with connect(api_server.url, "reader") as reader:
        await reader.join(channel, meta={"m": 1})
        before = {p: _spublished(p) for p in redis.master_ports()}
        for i in range(5):
            await reader.publish(channel, i)
        assert [m["data"] for m in await reader.messages(5)] == list(range(5))
        owner = redis.master_of(f"wshub:{{{channel}}}:meta")
        keys = []
        for port in redis.master_ports():
            keys += [k for k in command(port, "KEYS", f"wshub:{{{channel}}}:*").split() if k]
        assert {"meta", "hist", "users", "umeta", "channels"} <= {k.split(":")[-1] for k in keys}
        slots = {command(owner, "CLUSTER", "KEYSLOT", k).strip() for k in keys}
        assert len(slots) == 1
        # Sharded pub/sub: the publications went through the owner's SPUBLISH only.
        grew = {p for p in redis.master_ports() if _spublished(p) > before[p]}
        assert grew == {owner}


def _spublished(port: int) -> int:
    """SPUBLISH calls a master ran, scripts' included."""
    return _calls(port, "spublish")


def _calls(port: int, name: str) -> int:
    """Calls of a command a node ran (INFO commandstats: ``script|load`` for SCRIPT LOAD)."""
    for line in command(port, "INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{name}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_a_script_unknown_again_after_its_reload_is_the_callers_error(
    redis: RedisCluster,
) -> None:
    """A master that does not know a script (a promoted replica) gets it loaded and run again,
    once: a second NOSCRIPT is raised, not retried for ever."""
    from redis.asyncio.cluster import RedisCluster as ClusterClient
    from redis.exceptions import NoScriptError

    from wshub.brokers.redis.replication import run_replicated

    key = "noscript:{twice}"
    master = redis.master_of(key)
    assert redis.replicas_of(master)  # the replicated path: EVALSHA and WAIT in one pipeline
    client = ClusterClient(host="127.0.0.1", port=master)
    await client.initialize()
    try:
        script = client.register_script("return 1")
        # What reloading loads no longer has the script's sha: each EVALSHA gets NOSCRIPT, as
        # when the cache is flushed between the reload and the second try.
        script.script = "return 2"
        redis.cmd(master, "CONFIG", "RESETSTAT")
        with pytest.raises(NoScriptError):
            await run_replicated(client, script, [key], [], 100)
        assert _calls(master, "evalsha") == 2
        assert _calls(master, "script|load") == 1
    finally:
        await client.aclose()


async def test_a_cluster_that_cannot_be_reached_is_unavailable() -> None:
    from tests.support import free_port
    from wshub.brokers import BrokerUnavailable
    from wshub.brokers.redis import RedisBroker
    from wshub.model.config import Settings

    broker = RedisBroker(f"redis+cluster://127.0.0.1:{free_port()}", Settings(broker_timeout=1))
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(broker.publish("a", b"1", None), 10)
    await broker.close()
