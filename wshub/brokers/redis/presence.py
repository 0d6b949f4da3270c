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

import redis.asyncio as aioredis
from msgspec import Raw

from wshub import protocol
from wshub.brokers.base import PresentUser
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
        redis: aioredis.Redis,
        settings: Settings,
        node: str,
        prefix: str,
        call: Call,
        emit: Emit,
        keep_ms: int,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.node = node
        self.prefix = prefix
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

    def _key(self, channel: str, part: str) -> str:
        return f"{self.prefix}:{{{channel}}}:{part}"

    def _keys(self, channel: str, node: str) -> list[str]:
        return [
            self._key(channel, f"conns:{node}"),
            self._key(channel, "users"),
            self._key(channel, "umeta"),
            f"{self.prefix}:channels",
            f"{self.prefix}:node:{node}:chans",
        ]

    async def add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        key = (channel, session)
        self.local[key] = (user, meta)
        self._adding.add(key)  # its own call says whether it was first: not a re-registration
        try:
            return await self._register(channel, user, session, meta)
        finally:
            self._adding.discard(key)

    async def _register(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        first = await self.call(
            self._add(keys=self._keys(channel, self.node), args=[session, user, meta, channel])
        )
        return bool(first)

    async def remove(self, channel: str, user: str, session: str) -> bytes | None:
        if self.local.pop((channel, session), None) is None:
            return None  # already gone: this node left the cluster
        return await self._unregister(channel, user, session)

    async def _unregister(self, channel: str, user: str, session: str) -> bytes | None:
        meta: bytes | None = await self.call(
            self._remove(keys=self._keys(channel, self.node), args=[session, user, channel])
        )
        return meta

    async def members(self, channel: str) -> list[PresentUser]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key(channel, "users"))
            pipe.hgetall(self._key(channel, "umeta"))
            users, metas = await self.call(pipe.execute())
        return [
            PresentUser(user.decode(), metas.get(user, b"null"), int(count))
            for user, count in sorted(users.items())
        ]

    async def channels(self) -> dict[str, int]:
        counts: dict[bytes, bytes] = await self.call(self.redis.hgetall(f"{self.prefix}:channels"))
        return {name.decode(): int(n) for name, n in counts.items() if int(n) > 0}

    # --- nodes ------------------------------------------------------------------------------

    async def _heartbeat(self, mode: str) -> list[Any]:
        ttl_ms = int(self.settings.presence_ttl * 1000)
        p = self.prefix
        reply: list[Any] = await self.call(
            self._beat(
                keys=[
                    f"{p}:nodes",
                    f"{p}:nodes:clock",
                    f"{p}:nodes:evicted",
                    f"{p}:nodes:evicting",
                ],
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
        chans_key = f"{self.prefix}:node:{node}:chans"
        channels: set[bytes] = await self.call(self.redis.smembers(chans_key))
        for raw in channels:
            channel = raw.decode()
            left = await self.call(
                self._evict(
                    keys=[*self._keys(channel, node), f"{self.prefix}:nodes"], args=[node, channel]
                )
            )
            for i in range(0, len(left), 2):
                user, meta = left[i].decode(), left[i + 1]
                event = protocol.MemberLeft(channel=channel, user=user, meta=Raw(meta))
                await self.emit(channel, protocol.encode(event), user)
        await self.call(self.redis.zrem(f"{self.prefix}:nodes:evicting", node))

    async def leave(self) -> None:
        """Leave the cluster: this node's presence goes, its users' departures are announced."""
        reply = await self._heartbeat("leave")
        self.local.clear()
        for victim in reply[1:]:
            await self._clean_up(victim.decode())
