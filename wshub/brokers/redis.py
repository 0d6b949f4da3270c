"""The Redis broker: many processes and machines sharing one Redis.

- A publication is one Lua script: it assigns the channel's next offset, appends the entry to
  the channel's history and publishes it on the channel's pub/sub channel, atomically, so
  every node sees one offset sequence in one order. Each node receives it once and fans out
  locally.
- Pub/sub is at most once. The hub notices a missing offset and fills the gap from history
  (see ``wshub.channel``); after a reconnect this broker asks the hub to check every channel.
- Presence lives in hashes, one field per connection, counted per user by scripts that say
  when a user's first connection joins and last one leaves. Each node heartbeats into a sorted
  set; a node whose heartbeat is older than half the presence TTL is evicted, by whichever
  node notices first, and its users' ``member_left`` events are sent.
- While Redis is unreachable, operations raise BrokerUnavailable (clients get
  ``unavailable``), the outage is logged once, and a listener reconnects with backoff and
  restores every subscription.

See docs/scaling.md for what this guarantees and what a failure loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from msgspec import Raw
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from wshub import protocol
from wshub.brokers.base import BrokerSink, BrokerUnavailable, Member
from wshub.brokers.redis_scripts import HEARTBEAT, PRESENCE_ADD, PRESENCE_REMOVE, PUBLISH, READ
from wshub.config import Settings
from wshub.history import Recovery, new_epoch, page, recover
from wshub.publication import Publication
from wshub.redaction import redact_url

__all__ = ["RedisBroker"]

log = logging.getLogger("wshub.redis")

T = TypeVar("T")
NO_SENDER = b"~"
CONFIRM_SECONDS = 5.0
MAX_BACKOFF = 2.0
POOL_SIZE = 64
"""Redis connections for commands, per node; pub/sub has one more of its own."""


class RedisBroker:
    def __init__(
        self, url: str, settings: Settings, node: str | None = None, prefix: str = "wshub"
    ) -> None:
        self.url = url
        self.settings = settings
        self.node = node or secrets.token_hex(4)
        self.prefix = prefix
        self.keep_ms = int(max(3600.0, settings.history_ttl) * 1000)
        self.history_ms = int(settings.history_ttl * 1000)
        options: dict[str, Any] = {"decode_responses": False, "socket_connect_timeout": 2}
        # Commands get one immediate retry, for a pooled connection that went stale while
        # Redis restarted; no more, so that a client waiting on a publish during an outage
        # hears "unavailable" now. The listener never retries: it reconnects by itself.
        # A bounded pool: commands wait for a free connection instead of opening one per
        # concurrent command (10,000 clients joining at once would open 10,000 connections,
        # kept open for ever; the soak test found it).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=CONFIRM_SECONDS,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 1),
            **options,
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._sub_client = aioredis.from_url(url, retry=Retry(NoBackoff(), 0), **options)
        self._publish = self._redis.register_script(PUBLISH)
        self._read = self._redis.register_script(READ)
        self._presence_add = self._redis.register_script(PRESENCE_ADD)
        self._presence_remove = self._redis.register_script(PRESENCE_REMOVE)
        self._heartbeat = self._redis.register_script(HEARTBEAT)
        self._sink: BrokerSink | None = None
        self._pubsub: PubSub | None = None
        self._wanted: set[bytes] = set()
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._local_presence: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._down = False
        self._closing = False
        self._node_channel = f"{prefix}:node:{self.node}".encode()

    # --- keys -----------------------------------------------------------------------------

    def _key(self, channel: str, part: str) -> str:
        return f"{self.prefix}:{{{channel}}}:{part}"

    def _user_channel(self, user: str) -> bytes:
        return f"{self.prefix}:user:{{{user}}}".encode()

    def _channel_of(self, name: bytes) -> tuple[str, str] | None:
        """("c", channel) or ("u", user) for one of this broker's pub/sub channel names."""
        text = name.decode()
        head, _, rest = text.partition(":")
        if head != self.prefix:
            return None
        if rest.startswith("{") and rest.endswith("}:pub"):
            return "c", rest[1:-5]
        if rest.startswith("user:{"):
            return "u", rest[6:-1]
        return None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, sink: BrokerSink) -> None:
        self._sink = sink
        loop = asyncio.get_running_loop()
        connected = loop.create_future()
        self._tasks = [
            loop.create_task(self._listen_forever(connected)),
            loop.create_task(self._heartbeat_forever()),
        ]
        # Start even when Redis is down: the node serves, answers "unavailable", and the
        # listener connects when Redis comes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(connected), CONFIRM_SECONDS)

    @property
    def ready(self) -> bool:
        """Subscribed to Redis, and the last command did not fail."""
        return self._pubsub is not None and not self._down and not self._closing

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._leave_cluster()
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
        await self._sub_client.aclose()

    async def _leave_cluster(self) -> None:
        reply = await self._heartbeat(
            keys=[f"{self.prefix}:nodes"], args=[self.prefix, self.node, 0, "1"]
        )
        self._local_presence.clear()
        await self._announce_departures(reply[1:])

    # --- calls, with outages turned into BrokerUnavailable --------------------------------

    async def _call(self, op: Awaitable[T]) -> T:
        try:
            result = await op
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            raise BrokerUnavailable(str(exc)) from exc
        return result

    def _went_down(self, exc: BaseException) -> None:
        if not self._down and not self._closing:
            self._down = True
            log.warning(
                "Redis at %s is unreachable (%s): publish and send answer 'unavailable' "
                "until it is back",
                redact_url(self.url),
                exc,
            )

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            log.warning("Redis at %s is reachable again", redact_url(self.url))

    # --- pub/sub --------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        await self._subscribe(self._key(channel, "pub").encode())

    async def unsubscribe(self, channel: str) -> None:
        await self._unsubscribe(self._key(channel, "pub").encode())

    async def watch(self, user: str) -> None:
        await self._subscribe(self._user_channel(user))

    async def unwatch(self, user: str) -> None:
        await self._unsubscribe(self._user_channel(user))

    async def _subscribe(self, name: bytes) -> None:
        self._wanted.add(name)
        pubsub = self._pubsub
        if pubsub is None:
            raise BrokerUnavailable("not connected to Redis")
        confirmed = self._confirmed.get(name)
        if confirmed is None or confirmed.done():
            confirmed = self._confirmed[name] = asyncio.get_running_loop().create_future()
        await self._call(pubsub.subscribe(name))
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_SECONDS)
        except TimeoutError:
            raise BrokerUnavailable("Redis did not confirm a subscription") from None

    async def _unsubscribe(self, name: bytes) -> None:
        self._wanted.discard(name)
        pubsub = self._pubsub
        if pubsub is not None:
            with contextlib.suppress(BrokerUnavailable):
                await self._call(pubsub.unsubscribe(name))

    async def _listen_forever(self, connected: asyncio.Future[None]) -> None:
        delay = 0.1
        first = True
        while True:
            pubsub = self._sub_client.pubsub()
            try:
                names = [self._node_channel, *self._wanted]
                self._confirmed = {n: asyncio.get_running_loop().create_future() for n in names}
                await pubsub.subscribe(*names)
                self._pubsub = pubsub
                if not first:
                    asyncio.get_running_loop().create_task(self._resync_when_confirmed(names))
                first = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        if not connected.done() and message["channel"] == self._node_channel:
                            connected.set_result(None)
                        self._dispatch(message)
                        delay = 0.1
            except (RedisError, OSError) as exc:
                self._went_down(exc)
                self._pubsub = None
                if not connected.done():  # let the node start anyway, degraded
                    connected.set_result(None)
                for future in self._confirmed.values():
                    if not future.done():
                        future.cancel()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _resync_when_confirmed(self, names: list[bytes]) -> None:
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            futures = [self._confirmed[n] for n in names if n in self._confirmed]
            await asyncio.wait_for(asyncio.gather(*futures), CONFIRM_SECONDS)
            self._came_back()
            if self._sink is not None:
                self._sink.resync()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name: bytes = message["channel"]
        if kind == "subscribe":
            confirmed = self._confirmed.get(name)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind != "message" or self._sink is None:
            return
        target = self._channel_of(name)
        if target is None:
            return
        data: bytes = message["data"]
        tag = data[:1]
        if target[0] == "c":
            channel = target[1]
            if tag == b"m":
                self._sink.deliver(_parse_entry(channel, data[1:]))
            elif tag == b"e":
                exclude, _, frame = data[1:].partition(b"\n")
                self._sink.deliver_event(channel, frame.decode(), exclude.decode() or None)
        elif tag == b"d":
            self._sink.deliver_direct(target[1], data[1:].decode())
        elif tag == b"k":
            self._sink.deliver_disconnect(target[1])

    # --- publications and history ---------------------------------------------------------

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        s = self.settings
        keys = [self._key(channel, "meta"), self._key(channel, "hist")]
        key_ms = int(s.idempotency_ttl * 1000)
        if idempotency_key is not None and key_ms > 0:  # in the channel's hash slot too
            keys.append(self._key(channel, "idem:") + idempotency_key)
        offset, epoch, ts = await self._call(
            self._publish(
                keys=keys,
                args=[
                    data,
                    NO_SENDER if sender is None else sender,
                    new_epoch(),
                    s.history_size,
                    self.history_ms,
                    self.keep_ms,
                    self._key(channel, "pub"),
                    key_ms,
                ],
            )
        )
        self._came_back()
        return Publication(channel, int(offset), epoch.decode(), sender, data, int(ts))

    async def _kept(self, channel: str, with_entries: bool) -> tuple[str, int, list[Publication]]:
        reply = await self._call(
            self._read(
                keys=[self._key(channel, "meta"), self._key(channel, "hist")],
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
        await self._call(self._redis.publish(self._key(channel, "pub"), payload))

    async def send(self, user: str, frame: str) -> None:
        await self._call(self._redis.publish(self._user_channel(user), b"d" + frame.encode()))

    async def disconnect(self, user: str) -> None:
        await self._call(self._redis.publish(self._user_channel(user), b"k"))

    # --- presence -------------------------------------------------------------------------

    def _presence_keys(self, channel: str) -> list[str]:
        return [
            self._key(channel, "conns"),
            self._key(channel, "users"),
            self._key(channel, "umeta"),
            f"{self.prefix}:channels",
        ]

    async def presence_add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        self._local_presence[(channel, session)] = (user, meta)
        first = await self._call(
            self._presence_add(
                keys=[*self._presence_keys(channel), f"{self.prefix}:node:{self.node}:chans"],
                args=[f"{self.node} {session}", user, meta, channel],
            )
        )
        return bool(first)

    async def presence_remove(self, channel: str, user: str, session: str) -> bytes | None:
        if self._local_presence.pop((channel, session), None) is None:
            return None  # already gone: this node left the cluster, or was evicted
        meta: bytes | None = await self._call(
            self._presence_remove(
                keys=self._presence_keys(channel),
                args=[f"{self.node} {session}", user, channel],
            )
        )
        return meta

    async def presence(self, channel: str) -> list[Member]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key(channel, "users"))
            pipe.hgetall(self._key(channel, "umeta"))
            users, metas = await self._call(pipe.execute())
        return [
            Member(user.decode(), metas.get(user, b"null"), int(count))
            for user, count in sorted(users.items())
        ]

    async def channels(self) -> dict[str, int]:
        counts: dict[bytes, bytes] = await self._call(
            self._redis.hgetall(f"{self.prefix}:channels")  # type: ignore[arg-type]
        )
        return {name.decode(): int(n) for name, n in counts.items() if int(n) > 0}

    async def share_stats(self, node: str, stats: bytes, ttl: float) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.prefix}:stats:{node}", stats, px=int(ttl * 1000))
            pipe.sadd(f"{self.prefix}:stats", node)
            await self._call(pipe.execute())

    async def cluster_stats(self) -> list[bytes]:
        index = f"{self.prefix}:stats"
        members: set[Any] = await self._call(self._redis.smembers(index))
        nodes = sorted(m.decode() for m in members)
        if not nodes:
            return []
        found: list[Any] = await self._call(
            self._redis.mget([f"{self.prefix}:stats:{n}" for n in nodes])
        )
        gone = [n for n, v in zip(nodes, found, strict=True) if v is None]
        if gone:  # nodes that stopped sharing: their figures expired
            await self._call(self._redis.srem(index, *gone))
        return [v for v in found if isinstance(v, bytes)]

    async def _heartbeat_forever(self) -> None:
        ttl = self.settings.presence_ttl
        while True:
            with contextlib.suppress(BrokerUnavailable):
                await self.beat()
            await asyncio.sleep(ttl / 4)

    async def beat(self) -> None:
        """Say this node is alive, and evict the nodes that are not.

        A node is dead when its last heartbeat is older than half the presence TTL; beats
        come every quarter TTL, so a dead node's users leave presence within the TTL.
        """
        dead_after_ms = int(self.settings.presence_ttl * 500)
        reply = await self._call(
            self._heartbeat(
                keys=[f"{self.prefix}:nodes"],
                args=[self.prefix, self.node, dead_after_ms, "0"],
            )
        )
        self._came_back()
        if reply[0] == 1 and self._local_presence:
            # This node was evicted (it stalled), or Redis lost its data: be present again.
            await self._restore_presence()
        await self._announce_departures(reply[1:])

    async def _restore_presence(self) -> None:
        log.warning(
            "re-registering %d presence entries of node %s", len(self._local_presence), self.node
        )
        for (channel, session), (user, meta) in list(self._local_presence.items()):
            if await self.presence_add(channel, user, session, meta):
                event = protocol.MemberJoined(channel=channel, user=user, meta=Raw(meta))
                await self.emit(channel, protocol.encode(event), exclude_user=user)

    async def _announce_departures(self, flat: list[bytes]) -> None:
        for i in range(0, len(flat), 3):
            channel, user, meta = flat[i].decode(), flat[i + 1].decode(), flat[i + 2]
            event = protocol.MemberLeft(channel=channel, user=user, meta=Raw(meta))
            await self.emit(channel, protocol.encode(event), exclude_user=user)


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
