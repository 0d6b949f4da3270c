"""Cluster presence on Redis: who is in which channel, and which nodes are alive.

Each node heartbeats every quarter of the presence TTL; a node silent for half the TTL is
evicted by whichever node notices first, and its users' ``member_left`` events are sent. A
stall of Redis itself counts against no node (see the HEARTBEAT script).

A node keeps its own connections' presence in memory, so that it can register them again:
after it was evicted (it stalled: its users were announced gone, so they are announced back)
or after Redis lost its data (nobody was told anything: they come back quietly). It learns
which from its heartbeat's answer, and keeps trying until the registration is complete, so a
lost reply cannot leave it absent (a registration is idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from msgspec import Raw

from wshub import protocol
from wshub.brokers.base import PresentUser
from wshub.brokers.redis.keys import Keys
from wshub.brokers.redis.link import Client
from wshub.brokers.redis.scripts import EVICT, HEARTBEAT, PRESENCE_ADD, PRESENCE_REMOVE
from wshub.model.config import Settings

__all__ = ["RedisPresence"]

log = logging.getLogger("wshub.redis")

T = TypeVar("T")
Call = Callable[[Awaitable[Any]], Awaitable[Any]]
Emit = Callable[[str, str, str | None], Awaitable[None]]
MOST_VICTIMS = 8
"""Dead nodes one heartbeat takes on, so one script's work stays small."""
REGISTERED, EVICTED, UNKNOWN = 0, 1, 2


class RedisPresence:
    def __init__(
        self,
        redis: Client,
        settings: Settings,
        node: str,
        keys: Keys,
        call: Call,
        emit: Emit,
        keep_ms: int,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.node = node
        self.keys = keys
        self.call = call
        self.emit = emit
        self.keep_ms = keep_ms
        self.local: dict[tuple[str, str], tuple[str, bytes]] = {}
        """(channel, session) -> (user, meta), for every connection this node has joined."""
        self._adding: set[tuple[str, str]] = set()
        self.rejoin: bool | None = None
        """While not None, this node must register its presence again (True: announced)."""
        self._add = redis.register_script(PRESENCE_ADD)
        self._remove = redis.register_script(PRESENCE_REMOVE)
        self._beat = redis.register_script(HEARTBEAT)
        self._evict = redis.register_script(EVICT)

    async def add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        key = (channel, session)
        self.local[key] = (user, meta)
        self._adding.add(key)  # its own call says whether it was first: not a re-registration
        try:
            return await self._register(channel, user, session, meta)
        finally:
            self._adding.discard(key)

    async def _register(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        if not self.keys.atomic:
            # Before the entry, and idempotent: a cleanup that finds the channel listed and no
            # entry does nothing, while an entry that is not listed would never be cleaned up.
            await self.call(self.redis.sadd(self.keys.node_channels(self.node), channel))
            await self.call(self.redis.sadd(self.keys.channels, channel))
        first = await self.call(
            self._add(
                keys=self.keys.presence(channel, self.node), args=[session, user, meta, channel]
            )
        )
        return bool(first)

    async def remove(self, channel: str, user: str, session: str) -> bytes | None:
        if self.local.pop((channel, session), None) is None:
            return None  # already gone: this node left the cluster
        return await self._unregister(channel, user, session)

    async def _unregister(self, channel: str, user: str, session: str) -> bytes | None:
        meta: bytes | None = await self.call(
            self._remove(keys=self.keys.presence(channel, self.node), args=[session, user, channel])
        )
        return meta

    async def members(self, channel: str) -> list[PresentUser]:
        async with self.redis.pipeline(transaction=self.keys.atomic) as pipe:
            pipe.hgetall(self.keys.channel(channel, "users"))
            pipe.hgetall(self.keys.channel(channel, "umeta"))
            users, metas = await self.call(pipe.execute())
        return [
            PresentUser(user.decode(), metas.get(user, b"null"), int(count))
            for user, count in sorted(users.items())
        ]

    async def channels(self) -> dict[str, int]:
        if self.keys.atomic:
            counts: dict[bytes, bytes] = await self.call(self.redis.hgetall(self.keys.channels))
            return {name.decode(): int(n) for name, n in counts.items() if int(n) > 0}
        return await self._channels_by_slot()

    async def _channels_by_slot(self) -> dict[str, int]:
        """A cluster: the index of names, then each channel's count from its own slot. Names
        whose count is gone leave the index; one that was joined meanwhile is listed again."""
        names = sorted(n.decode() for n in await self.call(self.redis.smembers(self.keys.channels)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(self.keys.channel(name, "channels"), name)
            found: list[Any] = await self.call(pipe.execute())
        counts = {name: int(n) for name, n in zip(names, found, strict=True) if n and int(n) > 0}
        idle = [name for name in names if name not in counts]
        if idle:
            await self.call(self.redis.srem(self.keys.channels, *idle))
            for name in idle:  # joined between the read and the removal: listed again
                if await self.call(self.redis.hget(self.keys.channel(name, "channels"), name)):
                    await self.call(self.redis.sadd(self.keys.channels, name))
        return counts

    # --- nodes ------------------------------------------------------------------------------

    async def _heartbeat(self, mode: str) -> list[Any]:
        ttl_ms = int(self.settings.presence_ttl * 1000)
        k = self.keys
        reply: list[Any] = await self.call(
            self._beat(
                keys=[k.nodes(), k.nodes("clock"), k.nodes("evicted"), k.nodes("evicting")],
                args=[self.node, mode, ttl_ms // 2, ttl_ms // 4, self.keep_ms, MOST_VICTIMS],
            )
        )
        return reply

    async def beat(self) -> None:
        """Say this node is alive, come back if it was taken for gone, evict the dead."""
        reply = await self._heartbeat("beat")
        state = int(reply[0])
        if state != REGISTERED:  # announced if anyone was told this node's users left
            self.rejoin = bool(self.rejoin) or state == EVICTED
        if self.rejoin is not None:
            await self._register_again(self.rejoin)
        for victim in reply[1:]:
            await self._clean_up(victim.decode())

    async def _register_again(self, announce: bool) -> None:
        # Registered first: from then on no late cleanup of this node's eviction can remove
        # what it adds back (EVICT skips registered nodes).
        reply = await self._heartbeat("join")
        if self.local:
            log.warning(
                "node %s registers %d presence entries again (%s)",
                self.node,
                len(self.local),
                "it was evicted" if announce else "Redis lost them",
            )
        for (channel, session), (user, meta) in list(self.local.items()):
            if (channel, session) not in self.local or (channel, session) in self._adding:
                continue  # left meanwhile, or being added right now
            first = await self._register(channel, user, session, meta)
            if (channel, session) not in self.local:  # left while being registered: undo
                await self._unregister(channel, user, session)
            elif first and announce:
                event = protocol.MemberJoined(channel=channel, user=user, meta=Raw(meta))
                await self.emit(channel, protocol.encode(event), user)
        self.rejoin = None
        for victim in reply[1:]:
            await self._clean_up(victim.decode())

    async def _clean_up(self, node: str) -> None:
        """Remove a dead (or leaving) node's presence, channel by channel, announcing who left."""
        chans_key = self.keys.node_channels(node)
        channels: set[bytes] = await self.call(self.redis.smembers(chans_key))
        for raw in channels:
            channel = raw.decode()
            left = await self._evict_one(node, channel)
            for i in range(0, len(left), 2):
                user, meta = left[i].decode(), left[i + 1]
                event = protocol.MemberLeft(channel=channel, user=user, meta=Raw(meta))
                await self.emit(channel, protocol.encode(event), user)
        await self.call(self.redis.zrem(self.keys.nodes("evicting"), node))

    async def _evict_one(self, node: str, channel: str) -> list[Any]:
        keys = self.keys.presence(channel, node)
        if self.keys.atomic:
            left: list[Any] = await self.call(
                self._evict(keys=[*keys, self.keys.nodes()], args=[node, channel])
            )
            return left
        # A cluster: the node register is in another slot, so it is read first. A node that
        # registers again between that read and the script would lose this channel's entries
        # until its next registration; the window is one round trip (docs/scaling.md).
        if await self.call(self.redis.zscore(self.keys.nodes(), node)) is not None:
            return []
        left = await self.call(self._evict(keys=keys, args=[node, channel]))
        await self.call(self.redis.srem(self.keys.node_channels(node), channel))
        return left

    async def leave(self) -> None:
        """Leave the cluster: this node's presence goes, its users' departures are announced."""
        reply = await self._heartbeat("leave")
        self.local.clear()
        for victim in reply[1:]:
            await self._clean_up(victim.decode())
