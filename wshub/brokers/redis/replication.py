"""A publication on a Redis Cluster is acknowledged once a replica has it, when there is one.

Redis replicates asynchronously. A master killed right after a publication that its replica
had not received yet is replaced by that replica, which then lacks it; the channel's offset
goes back, the next publication reuses the lost one's offset in the same epoch, and a
subscriber that saw the lost one takes the new one for a repeat: an acknowledged publication
lost with nobody told. So on a shard with a replica the script and a ``WAIT 1`` go out
together, in one pipeline on one connection to the slot's master (``WAIT`` counts that
connection's writes), and the publication is acknowledged after the replica confirmed it, or
after ``wait_ms`` if it did not (a replica that lags that much is one that a failover would
not promote either: ``cluster-replica-validity-factor``).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["run_replicated"]


async def run_replicated(
    cluster: RedisCluster, script: AsyncScript, keys: list[Any], args: list[Any], wait_ms: int
) -> Any:
    """Run ``script`` on its slot's master and wait for one replica (if the shard has any)."""
    nodes = cluster.nodes_manager.slots_cache.get(cluster.keyslot(keys[0])) or []
    if len(nodes) < 2:
        return await script(keys=keys, args=args)

    async def attempt() -> Any:
        async with cluster.pipeline(transaction=False) as pipe:
            # By name: redis-py refuses pipe.evalsha on a cluster, for fear of multi-slot scripts.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", 1, wait_ms, target_nodes=nodes[0])
            result, _ = await pipe.execute()
            return result

    try:
        return await attempt()
    except NoScriptError:
        # A replica promoted since: its script cache is empty. The script did not run.
        await cluster.script_load(script.script)
    # Once: a script unknown again (the cache flushed meanwhile) is the caller's error.
    return await attempt()
