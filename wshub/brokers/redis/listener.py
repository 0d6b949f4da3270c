"""The Redis broker's one pub/sub connection per node: subscriptions, liveness, reconnection.

Pub/sub is at most once, and a link can die without a FIN or RST (a NAT or load balancer that
forgot the flow, a failover behind a virtual IP, Redis frozen): reads then simply return
nothing, forever. So the listener asks: after a third of the broker timeout of silence it
sends a PING, and a link that says nothing at all for the whole timeout is taken for dead.
(redis-py's ``health_check_interval`` sends such PINGs too, but swallows their answers, so it
cannot tell a quiet link from a dead one.)

A session ends for any reason (a Redis error, a silent link, a bug): the listener starts a
new one, with redis-py's jittered exponential backoff between failed attempts, subscribes to
everything wanted again, and once Redis confirmed every subscription, tells the broker
(``on_back``) so that every channel is checked for what the gap lost. Until then it is not
``live`` and the node is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from wshub.brokers.base import BrokerTimeout, BrokerUnavailable

__all__ = ["Listener", "ListenerLost", "Retrying"]

log = logging.getLogger("wshub.redis")

MAX_BACKOFF = 2.0
LIVENESS = b"wshub-liveness"


class ListenerLost(ConnectionError):
    """A pub/sub session ended: Redis failed, fell silent, or handling a message failed."""


class Retrying:
    """What a listener and the shards' router share: a step retried for ever, with redis-py's
    jittered backoff between failures (each reported to ``on_lost``), and ``started``, done
    at the first step's end, good or failed."""

    started: asyncio.Future[None]
    on_lost: Callable[[BaseException], None]

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> None:
        # A fresh Retry per outage: its backoff starts small again after a good step.
        retry = Retry(EqualJitterBackoff(cap=MAX_BACKOFF, base=0.1), -1)
        await retry.call_with_retry(step, self._failed)

    async def _failed(self, exc: Exception) -> None:
        self._settle_started()
        self.on_lost(exc)

    def _settle_started(self) -> None:
        if not self.started.done():
            self.started.set_result(None)


class Listener(Retrying):
    def __init__(
        self,
        client: aioredis.Redis,
        timeout: float,
        node_channel: bytes,
        on_message: Callable[[dict[str, Any]], None],
        on_back: Callable[[], None],
        on_lost: Callable[[BaseException], None],
        sharded: bool = False,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.node_channel = node_channel
        self.on_message = on_message
        self.on_back = on_back
        self.on_lost = on_lost
        self.sharded = sharded
        """Sharded pub/sub (``SSUBSCRIBE``: one shard of a cluster) rather than plain."""
        self._kinds = ("ssubscribe", "smessage") if sharded else ("subscribe", "message")
        self.wanted: set[bytes] = set()
        self.live = False
        """Subscribed, every subscription confirmed, and Redis heard within the timeout."""
        self.closing = False
        """Set when the broker closes: no new session, the current one ends."""
        self.sessions = 0
        self.started = asyncio.get_running_loop().create_future()
        """Done at the first session's end of set-up, live or failed (the node starts anyway)."""
        self._pubsub: PubSub | None = None
        self._connected = asyncio.Event()
        """Set while a session holds a pub/sub connection that subscriptions can go out on."""
        self._attempting = False
        """A session is connecting right now (not backing off after a refusal)."""
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._heard = self._asked = 0.0
        """When the session last heard from Redis, and last asked it for a word (PING)."""

    async def run(self) -> None:
        """Sessions, one after another, for ever (until cancelled)."""
        while not self.closing:
            await self._retrying(self._session)

    async def _session(self) -> None:
        """One connection's life. Raises while it cannot get going (backoff, retry); returns
        when a session that was live ends (retried at once)."""
        pubsub = self.client.pubsub()
        loop = asyncio.get_running_loop()
        since = 0.0
        self._attempting = True
        try:
            names = [self.node_channel, *self.wanted]
            self._confirmed = {name: loop.create_future() for name in names}
            # Held here, not looked up again: an unsubscribe while this session starts pops
            # its future from _confirmed (and settles it), which must not end the session.
            pending = list(self._confirmed.values())
            await self._subscribe(pubsub, names)
            self._pubsub = pubsub
            self._attempting = False
            self._connected.set()
            await self._confirm(pubsub, pending)
            self.live, since = True, loop.time()
            self.sessions += 1
            self._settle_started()
            if self.sessions > 1:
                self.on_back()
            await self._pump(pubsub)
        except Exception as exc:
            if self.live:
                log.warning("Redis pub/sub connection lost (%s): reconnecting", exc)
            # A session that failed to start, or died young, backs off before the next one.
            if not self.live or loop.time() - since < self.timeout:
                if isinstance(exc, ConnectionError | RedisTimeout):
                    raise
                raise ListenerLost(repr(exc)) from exc
            self.on_lost(exc)
        finally:
            self.live = False
            self._pubsub = None
            self._attempting = False
            self._connected.clear()
            for future in self._confirmed.values():
                if not future.done():
                    future.set_exception(BrokerUnavailable("the Redis pub/sub link was lost"))
                    future.exception()  # retrieved: a subscriber that waits re-raises it
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _confirm(self, pubsub: PubSub, pending: list[asyncio.Future[None]]) -> None:
        """Read until Redis confirmed every subscription of a new session, within the timeout."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while not all(f.done() for f in pending):
            self._handle(await pubsub.get_message(timeout=self._left(deadline)))

    def _left(self, deadline: float) -> float:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise ListenerLost(f"Redis did not confirm subscriptions in {self.timeout:g} s")
        return min(left, 1.0)

    # What follows a read that timed out runs in calls of their own (_left, _hear): on Python
    # 3.11 the code a coroutine runs right after redis-py's read timeout gives no trace events,
    # so coverage could not tell whether it ran.

    async def _pump(self, pubsub: PubSub) -> None:
        self._heard = self._asked = asyncio.get_running_loop().time()
        while not self.closing:
            await self._hear(pubsub, await pubsub.get_message(timeout=min(1.0, self.timeout / 3)))

    async def _hear(self, pubsub: PubSub, message: dict[str, Any] | None) -> None:
        """After each read: a message, a PING after a third of the timeout of silence, or the
        end of a session that heard nothing for the whole timeout."""
        now = asyncio.get_running_loop().time()
        if message is not None:
            self._heard = now
            self._handle(message)
        elif now - self._heard > self.timeout:
            raise ListenerLost(f"no word from Redis in {self.timeout:g} s")
        elif now - max(self._heard, self._asked) >= self.timeout / 3:
            self._asked = now
            await pubsub.ping(LIVENESS)

    def _handle(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        kind = message["type"]
        if kind == self._kinds[0]:
            confirmed = self._confirmed.get(message["channel"])
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind == "sunsubscribe" and message["channel"] in self.wanted:
            # Redis dropped a wanted subscription itself: its slot moved to another shard
            # (resharding, failover). The session ends; the shards' router places it again.
            raise ListenerLost(f"Redis moved {message['channel']!r} to another shard")
        if kind != self._kinds[1]:
            return
        try:
            self.on_message(message)
        except Exception:  # one bad message or delivery must not end the stream
            log.exception("failed to deliver a message from Redis")

    # --- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, name: bytes) -> None:
        """Subscribe now, and in every later session; returns once Redis confirmed it."""
        self.wanted.add(name)
        if self._pubsub is None and self._attempting and not self.closing:
            # A session is connecting (e.g. right after Redis thawed): wait for it rather than
            # refuse a join that works a moment later. The hub's reply bound cuts this wait
            # short, and then answers `unavailable`. While Redis refuses connections (backoff),
            # nobody waits: the answer is `unavailable` at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), self.timeout)
        pubsub = self._pubsub
        if pubsub is None:
            raise BrokerUnavailable("not connected to Redis")
        confirmed = self._confirmed.get(name)
        if confirmed is None or confirmed.done():
            confirmed = self._confirmed[name] = asyncio.get_running_loop().create_future()
        try:
            await self._subscribe(pubsub, [name])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), self.timeout)
        except TimeoutError:
            raise BrokerTimeout("Redis did not confirm a subscription") from None

    async def unsubscribe(self, name: bytes) -> None:
        self.wanted.discard(name)
        confirmed = self._confirmed.pop(name, None)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)  # nobody needs it any more: a new session must not wait
        pubsub = self._pubsub
        if pubsub is not None:
            # A failure is the session's end: the next session does not subscribe it.
            with contextlib.suppress(RedisError, OSError):
                if self.sharded:
                    await pubsub.sunsubscribe(name)
                else:
                    await pubsub.unsubscribe(name)

    async def _subscribe(self, pubsub: PubSub, names: list[bytes]) -> None:
        if self.sharded:
            # One SSUBSCRIBE per name: one command's names must share a slot.
            for name in names:
                await pubsub.ssubscribe(name)
        else:
            await pubsub.subscribe(*names)
