"""A node's pub/sub on a Redis Cluster: one sharded listener per master, names placed by slot.

Sharded pub/sub (``SSUBSCRIBE`` / ``SPUBLISH``, Redis 7) keeps a channel's messages on the
shard that owns its slot, where classic cluster pub/sub copies every message to every shard.
A subscriber must therefore hold a connection to each master that owns a name it wants. redis-py's
asyncio ``RedisCluster`` offers no sharded pub/sub in every version wshub supports, so this
router holds one plain connection per master (a :class:`~wshub.brokers.redis.listener.Listener`
in sharded mode, with its liveness checks, backoff and re-subscription), and places each name
on the master of its slot, read from the command client's slot map.

When the map changes (a master died and a replica took over, a slot was resharded: the old
owner drops the subscription with ``sunsubscribe``), a listener's session ends and the router
refreshes the map, moves the names whose slot changed, stops the listeners of former masters
and asks the hub to check every channel (``on_back``), since whatever was published meanwhile
was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from wshub.brokers.base import BrokerUnavailable
from wshub.brokers.redis.link import pubsub_client, shard_url
from wshub.brokers.redis.listener import Listener, ListenerLost, Retrying

__all__ = ["Shards"]

log = logging.getLogger("wshub.redis")

Address = tuple[str, int]


class _Shard:
    """One master's listener and the task that runs it."""

    def __init__(self, listener: Listener, task: asyncio.Task[None]) -> None:
        self.listener = listener
        self.task = task

    async def stop(self) -> None:
        self.listener.closing = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self.listener.client.aclose()


class Shards(Retrying):
    """The same face as :class:`Listener` (``run``, ``started``, ``live``, ``subscribe``,
    ``unsubscribe``, ``closing``), over every master of a cluster."""

    def __init__(
        self,
        cluster: RedisCluster,
        url: str,
        timeout: float,
        node_channel: bytes,
        on_message: Callable[[dict[str, Any]], None],
        on_back: Callable[[], None],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self.cluster = cluster
        self.url = url
        self.timeout = timeout
        self.node_channel = node_channel
        self.on_message = on_message
        self.on_back = on_back
        self.on_lost = on_lost
        self.closing = False
        self.shards: dict[Address, _Shard] = {}
        self.placed: dict[bytes, Address] = {}
        """Every wanted name, and the master whose listener holds it."""
        self.started = asyncio.get_running_loop().create_future()
        self.moves = 0
        """How many times names were placed again after the slot map changed."""
        self._changed = asyncio.Event()

    @property
    def live(self) -> bool:
        shards = self.shards.values()
        return bool(shards) and not self._changed.is_set() and all(s.listener.live for s in shards)

    # --- the slot map -----------------------------------------------------------------------

    def _masters(self) -> dict[Address, set[int]]:
        owned: dict[Address, set[int]] = {}
        for slot, nodes in self.cluster.nodes_manager.slots_cache.items():
            if nodes:
                owned.setdefault((nodes[0].host, int(nodes[0].port)), set()).add(slot)
        return owned

    def _master_of(self, name: bytes) -> Address | None:
        nodes = self.cluster.nodes_manager.slots_cache.get(self.cluster.keyslot(name))
        return (nodes[0].host, int(nodes[0].port)) if nodes else None

    def _own_channel(self, slots: set[int]) -> bytes:
        """A name of this node's own in one of a master's slots (a hash tag picks the slot), so
        every listener session holds a subscription even when the node wants nothing there."""
        for i in itertools.count():
            name = self.node_channel + b":{" + str(i).encode() + b"}"
            if self.cluster.keyslot(name) in slots:
                return name
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the router's life --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self.closing:
                await self._retrying(self._place)
                if not self.started.done():
                    waits = [shard.listener.started for shard in self.shards.values()]
                    await asyncio.wait(waits, timeout=self.timeout)
                    self._settle_started()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.timeout)
                # Read the map again at least every timeout: a slot that moved before any
                # listener noticed, and replicas that joined (publish waits for one, see
                # replication.py), are learnt so.
                self._changed.set()
        finally:
            for shard in list(self.shards.values()):
                await shard.stop()
            self.shards.clear()

    async def _place(self) -> None:
        """Read the slot map again if it changed, and make the listeners match it."""
        if self._changed.is_set() or not self.shards:
            self._changed.clear()
            try:
                await self.cluster.nodes_manager.initialize()
            except (RedisError, RedisClusterException, OSError) as exc:
                self._changed.set()
                # A ConnectionError, so that the Retry above backs off and tries again.
                raise ListenerLost(f"no Redis Cluster slot map: {exc}") from exc
        masters = self._masters()
        moved = False
        for address, shard in list(self.shards.items()):
            slots = masters.get(address)
            if slots is None or self.cluster.keyslot(shard.listener.node_channel) not in slots:
                moved = True  # no longer a master, or its own name moved away
                del self.shards[address]
                await shard.stop()
        for address, slots in masters.items():
            if address not in self.shards:
                self._open(address, slots)
        for name, address in list(self.placed.items()):
            target = self._master_of(name)
            if target is not None and target != address:
                moved = True
                self.placed[name] = target
                old = self.shards.get(address)
                if old is not None:
                    await old.listener.unsubscribe(name)
                with contextlib.suppress(BrokerUnavailable):  # its next session subscribes it
                    await self.shards[target].listener.subscribe(name)
        if moved:
            self.moves += 1
            log.warning("the Redis Cluster slot map changed: subscriptions placed again")
            self.on_back()

    def _open(self, address: Address, slots: set[int]) -> None:
        client = pubsub_client(shard_url(self.url, *address), self.timeout)
        listener = Listener(
            client,
            self.timeout,
            self._own_channel(slots),
            self.on_message,
            self.on_back,
            self._lost,
            sharded=True,
        )
        listener.wanted.update(n for n, a in self.placed.items() if a == address)
        task = asyncio.get_running_loop().create_task(listener.run())
        self.shards[address] = _Shard(listener, task)

    def _lost(self, exc: BaseException) -> None:
        """A shard's session failed: Redis may have moved its slots. The map is read again."""
        self._changed.set()
        self.on_lost(exc)

    # --- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, name: bytes) -> None:
        address = self._master_of(name)
        shard = self.shards.get(address) if address is not None else None
        if address is None or shard is None:
            self._changed.set()
            raise BrokerUnavailable("no Redis Cluster master known for this channel yet")
        self.placed[name] = address
        await shard.listener.subscribe(name)

    async def unsubscribe(self, name: bytes) -> None:
        address = self.placed.pop(name, None)
        shard = self.shards.get(address) if address is not None else None
        if shard is not None:
            await shard.listener.unsubscribe(name)
