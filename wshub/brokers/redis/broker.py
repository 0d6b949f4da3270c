"""The Redis broker: many processes and machines sharing one Redis.

- A publication is one Lua script: it assigns the channel's next offset, appends the entry to
  the channel's history and publishes it on the channel's pub/sub channel, atomically, so
  every node sees one offset sequence in one order. Each subscribed node receives it and fans
  out locally.
- Pub/sub is at most once per node: a node whose subscription broke misses what was published
  meanwhile. The hub notices a missing offset and fills the gap from history (see
  ``wshub.core.gaps``); after every new pub/sub session this broker asks the hub to check every
  channel (``BrokerSink.resync``, from ``wshub.brokers.redis.listener``).
- Presence lives in hashes, counted per user by scripts that say when a user's first
  connection joins and last one leaves; nodes heartbeat and evict the dead
  (``wshub.brokers.redis.presence``).
- Every wait on Redis is bounded by the broker timeout. A command that surely did not reach
  Redis raises BrokerUnavailable (clients get ``unavailable``); one that was sent and not
  answered raises BrokerTimeout (``timeout``: it may have run) (``wshub.brokers.redis.link``).
  The outage is logged once.

- On a Redis Cluster (``redis+cluster://``) the same scripts run, each on its channel's hash
  slot (``wshub.brokers.redis.keys``), pub/sub is sharded with one listener per master
  (``wshub.brokers.redis.shards``), and a publication waits for the shard's replica
  (``wshub.brokers.redis.replication``).

See docs/scaling.md for what this guarantees and what a failure loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from wshub.brokers.base import BrokerSink, BrokerTimeout, BrokerUnavailable, PresentUser
from wshub.brokers.redis.keys import Keys
from wshub.brokers.redis.link import (
    POOL_SIZE,
    Client,
    ReplyLost,
    cluster_client,
    command_client,
    pubsub_client,
)
from wshub.brokers.redis.listener import Listener
from wshub.brokers.redis.presence import RedisPresence
from wshub.brokers.redis.replication import run_replicated
from wshub.brokers.redis.scripts import PUBLISH, READ
from wshub.brokers.redis.shards import Shards
from wshub.model.config import Settings
from wshub.model.history import Recovery, new_epoch, page, recover
from wshub.model.publication import Publication
from wshub.redaction import redact_url

__all__ = ["POOL_SIZE", "RedisBroker"]

log = logging.getLogger("wshub.redis")

T = TypeVar("T")
NO_SENDER = b"~"


class RedisBroker:
    """A :class:`~wshub.brokers.base.Broker` and a :class:`~wshub.brokers.base.BrokerOps` over
    one Redis, or a Redis Cluster (``redis+cluster://``), shared by every node that names it.

    On a cluster the same scripts run, each on its channel's slot, pub/sub is sharded, and a
    router keeps one listener per master (:mod:`wshub.brokers.redis.shards`)."""

    def __init__(
        self, url: str, settings: Settings, node: str | None = None, prefix: str = "wshub"
    ) -> None:
        self.url = url
        self.settings = settings
        self.node = node or secrets.token_hex(4)
        self.prefix = prefix
        self.keep_ms = int(max(3600.0, settings.history_ttl) * 1000)
        self.history_ms = int(settings.history_ttl * 1000)
        timeout = settings.broker_timeout
        self.keys = Keys(prefix, cluster=urlsplit(url).scheme.endswith("+cluster"))
        self._redis: Client
        self._sub_client: aioredis.Redis | None = None
        if self.keys.cluster:
            self._redis = cluster_client(url, timeout)
        else:
            self._redis = command_client(url, timeout)
            self._sub_client = pubsub_client(url, timeout)
        self._publish = self._redis.register_script(PUBLISH)
        self._read = self._redis.register_script(READ)
        self._presence = RedisPresence(
            self._redis, settings, self.node, self.keys, self._call, self.emit, self.keep_ms
        )
        self._listener: Listener | Shards | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down = False
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, sink: BrokerSink) -> None:
        hooks = (functools.partial(self._dispatch, sink), functools.partial(self._resync, sink))
        timeout, own = self.settings.broker_timeout, self.keys.node(self.node)
        listener: Listener | Shards
        if isinstance(self._redis, RedisCluster):  # one listener per master, by slot
            listener = Shards(self._redis, self.url, timeout, own, *hooks, self._went_down)
        else:
            assert self._sub_client is not None
            listener = Listener(self._sub_client, timeout, own, *hooks, self._went_down)
        self._listener = listener
        self._keep("listener", listener.run)
        self._keep("heartbeat", self._heartbeat_forever)
        # Start even when Redis is down: the node serves, answers "unavailable", and the
        # listener connects when Redis comes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(listener.started), self.settings.broker_timeout)

    def _keep(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a task for the broker's life: whatever ends it, it is logged and run again."""

        def ended(task: asyncio.Task[None]) -> None:
            if self._closing or self._tasks.get(name) is not task:
                return
            exc = None if task.cancelled() else task.exception()
            log.error("the Redis %s stopped (%r): starting it again", name, exc, exc_info=exc)
            self._keep(name, run)

        task = self._tasks[name] = asyncio.get_running_loop().create_task(run())
        task.add_done_callback(ended)

    @property
    def ready(self) -> bool:
        """Subscribed to Redis and hearing from it, and the last command did not fail."""
        listener = self._listener
        return listener is not None and listener.live and not self._down and not self._closing

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.closing = True
        for task in list(self._tasks.values()):
            await _end(task)
        with contextlib.suppress(BrokerUnavailable):
            await self._presence.leave()
        # The listener's session closed its pub/sub connection as its task ended; the pool
        # closes it too, in use or not, should that end have been cut short.
        await self._redis.aclose()
        if self._sub_client is not None:
            await self._sub_client.aclose()

    # --- calls, with outages turned into BrokerUnavailable or BrokerTimeout ---------------

    async def _call(self, op: Awaitable[T]) -> T:
        try:
            result = await op
        except ReplyLost as exc:
            self._went_down(exc)
            raise BrokerTimeout(str(exc)) from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            self._went_down(exc)
            raise BrokerUnavailable(str(exc)) from exc
        return result

    def _went_down(self, exc: BaseException) -> None:
        if not self._down and not self._closing:
            self._down = True
            log.warning(
                "Redis at %s is unreachable (%s): publish and send answer 'unavailable' "
                "or 'timeout' until it is back",
                redact_url(self.url),
                exc,
            )

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            log.warning("Redis at %s is reachable again", redact_url(self.url))

    # --- pub/sub --------------------------------------------------------------------------

    def _listening(self) -> Listener | Shards:
        if self._listener is None:
            raise BrokerUnavailable("the broker is not started")
        return self._listener

    async def subscribe(self, channel: str) -> None:
        await self._listening().subscribe(self.keys.pub(channel))

    async def unsubscribe(self, channel: str) -> None:
        await self._listening().unsubscribe(self.keys.pub(channel))

    async def watch(self, user: str) -> None:
        await self._listening().subscribe(self.keys.user(user))

    async def unwatch(self, user: str) -> None:
        await self._listening().unsubscribe(self.keys.user(user))

    def _resync(self, sink: BrokerSink) -> None:
        """A new pub/sub session is live: what the old one missed is found by the hub."""
        self._came_back()
        sink.resync()

    def _dispatch(self, sink: BrokerSink, message: dict[str, Any]) -> None:
        target = self.keys.target(message["channel"])
        if target is None:
            return
        data: bytes = message["data"]
        tag = data[:1]
        if target[0] == "c":
            channel = target[1]
            if tag == b"m":
                sink.deliver(_parse_entry(channel, data[1:]))
            elif tag == b"e":
                exclude, _, frame = data[1:].partition(b"\n")
                sink.deliver_event(channel, frame.decode(), exclude.decode() or None)
        elif tag == b"d":
            sink.deliver_direct(target[1], data[1:].decode())
        elif tag == b"k":
            sink.deliver_kick(target[1])
        elif tag == b"s":
            sink.deliver_subscribe(target[1], data[1:].decode())
        elif tag == b"u":
            sink.deliver_unsubscribe(target[1], data[1:].decode())

    # --- publications and history ---------------------------------------------------------

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        s = self.settings
        keys = [self.keys.channel(channel, "meta"), self.keys.channel(channel, "hist")]
        key_ms = int(s.idempotency_ttl * 1000)
        if idempotency_key is not None and key_ms > 0:  # in the channel's hash slot too
            keys.append(self.keys.channel(channel, "idem:") + idempotency_key)
        args: list[Any] = [
            data,
            NO_SENDER if sender is None else sender,
            new_epoch(),
            s.history_size,
            self.history_ms,
            self.keep_ms,
            self.keys.pub(channel),
            key_ms,
            self.keys.publish_command,
        ]
        if isinstance(self._redis, RedisCluster):
            wait_ms = int(s.broker_timeout * 250)  # a quarter of the timeout, at most
            run = run_replicated(self._redis, self._publish, keys, args, wait_ms)
        else:
            run = self._publish(keys=keys, args=args)
        offset, epoch, ts = await self._call(run)
        self._came_back()
        return Publication(channel, int(offset), epoch.decode(), sender, data, int(ts))

    async def _kept(self, channel: str, with_entries: bool) -> tuple[str, int, list[Publication]]:
        reply = await self._call(
            self._read(
                keys=[self.keys.channel(channel, "meta"), self.keys.channel(channel, "hist")],
                args=[new_epoch(), self.keep_ms, "1" if with_entries else "0"],
            )
        )
        epoch, top, now = reply[0].decode(), int(reply[1]), int(reply[2])
        cutoff = now - self.history_ms
        kept = [p for p in (_parse_entry(channel, e) for e in reply[3:]) if p.ts > cutoff]
        return epoch, top, kept

    async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Recovery:
        cur_epoch, top, kept = await self._kept(channel, offset is not None)
        return recover(top, cur_epoch, kept, offset, epoch)

    async def history(
        self, channel: str, offset: int | None, epoch: str | None, limit: int
    ) -> tuple[str, list[Publication]]:
        cur_epoch, _, kept = await self._kept(channel, True)
        return cur_epoch, page(cur_epoch, kept, offset, epoch, limit)

    # --- ephemeral deliveries -------------------------------------------------------------

    async def emit(self, channel: str, frame: str, exclude_user: str | None = None) -> None:
        payload = b"e" + (exclude_user or "").encode() + b"\n" + frame.encode()
        await self._pub(self.keys.pub(channel), payload)

    async def send(self, user: str, frame: str) -> None:
        await self._pub(self.keys.user(user), b"d" + frame.encode())

    async def subscribe_user(self, user: str, channel: str) -> None:
        # PUBLISH returns once Redis has handed the command to every subscribed node: the
        # nodes with a connection of this user (see watch()). SPUBLISH too, on its shard.
        await self._pub(self.keys.user(user), b"s" + channel.encode())

    async def unsubscribe_user(self, user: str, channel: str) -> None:
        await self._pub(self.keys.user(user), b"u" + channel.encode())

    async def _pub(self, name: bytes, payload: bytes) -> None:
        if self.keys.cluster:
            await self._call(self._redis.spublish(name, payload))
        else:
            await self._call(self._redis.publish(name, payload))

    # --- presence -------------------------------------------------------------------------

    async def presence_add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        return await self._presence.add(channel, user, session, meta)

    async def presence_remove(self, channel: str, user: str, session: str) -> bytes | None:
        return await self._presence.remove(channel, user, session)

    async def presence(self, channel: str) -> list[PresentUser]:
        return await self._presence.members(channel)

    # --- operations and statistics (BrokerOps) -------------------------------------------

    async def channels(self) -> dict[str, int]:
        return await self._presence.channels()

    async def kick(self, user: str) -> None:
        await self._pub(self.keys.user(user), b"k")

    async def share_stats(self, node: str, stats: bytes, ttl: float) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.stats(node), stats, px=int(ttl * 1000))
            pipe.sadd(self.keys.stats(), node)
            await self._call(pipe.execute())

    async def cluster_stats(self) -> list[bytes]:
        index = self.keys.stats()
        members: set[Any] = await self._call(self._redis.smembers(index))
        nodes = sorted(m.decode() for m in members)
        if not nodes:
            return []
        found: list[Any] = await self._call(self._redis.mget([self.keys.stats(n) for n in nodes]))
        gone = [n for n, v in zip(nodes, found, strict=True) if v is None]
        if gone:  # nodes that stopped sharing: their figures expired
            await self._call(self._redis.srem(index, *gone))
        return [v for v in found if isinstance(v, bytes)]

    # --- liveness -------------------------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        ttl = self.settings.presence_ttl
        while not self._closing:
            try:
                await self.beat()
            except BrokerUnavailable:
                pass  # logged once by _went_down; the next beat tries again
            except Exception:
                log.exception("a Redis heartbeat failed")
            await asyncio.sleep(ttl / 4)

    async def beat(self) -> None:
        """Say this node is alive, and evict the nodes that are not (see RedisPresence)."""
        await self._presence.beat()
        self._came_back()


async def _end(task: asyncio.Task[None]) -> None:
    """Cancel a task and wait for its end. redis-py 8.1 can swallow a cancellation that lands
    inside a command, so it is asked again (the loops also stop by themselves on closing)."""
    for _ in range(50):
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.1)
        if done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
            return
    log.error("a Redis task did not stop: %r", task)


def _parse_entry(channel: str, entry: bytes) -> Publication:
    head, _, data = entry.partition(b"\n")
    offset, ts, epoch, sender = head.split(b" ")
    return Publication(
        channel,
        int(offset),
        epoch.decode(),
        None if sender == NO_SENDER else sender.decode(),
        data,
        int(ts),
    )
