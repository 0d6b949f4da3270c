"""Fault injection: two real nodes on a real Redis, each behind a TCP proxy, several
subscribers on each node and a publisher, while Redis or a link fails the ways they do.

Every test checks the delivery rule (each subscriber gets every acknowledged publication in
offset order, or it is disconnected and its resume says ``recovered: false``), that every
frame gets a reply, that no connection ends without a close frame unless its node died, and
that tasks and memory stay bounded. Each records how long the fault took to be detected and
what it cost into a JSON report (``$TMPDIR/wshub-faults.json``, or ``$WSHUB_FAULT_REPORT``):
docs/delivery.md and docs/scaling.md carry those figures.
"""

from __future__ import annotations

import asyncio
import signal
import time

from tests.conftest import ServerFactory
from tests.faults.actors import Subscriber
from tests.faults.cluster import (
    BROKER_TIMEOUT,
    PRESENCE_TTL,
    Cluster,
    cluster,
    outcome,
    record,
    wait_for,
)
from tests.support import RedisProcess

STALL = 4.0
"""Seconds Redis is frozen: longer than the broker timeout, shorter than the presence TTL."""
DETECT_BOUND = BROKER_TIMEOUT + 2.5
"""The timeout, plus a third of it before the first PING, plus polling."""


def departures(c: Cluster, since: float) -> list[str]:
    """Presence events about the subscribers since a moment (there should be none)."""
    return [
        f"{e['type']} {e['user']}"
        for s in c.subscribers
        for t, e in s.events
        if t > since and e["user"].startswith("s")
    ]


async def test_a_silently_severed_link_is_found_and_its_gap_filled(
    redis: RedisProcess, make_server: ServerFactory
) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        c.proxies[1].sever()  # node 1's links: Redis' side closed, node 1's side silent
        cut, wall = time.monotonic(), time.time()
        detected = await c.detected(1, wall, DETECT_BOUND + 2)
        await c.until_ready(1, True, 15)
        ready = time.monotonic() - cut
        await c.flowing()
        restored = time.monotonic() - cut
        seen = await outcome(c, before)
        record(
            "silent sever",
            detected_s=detected,
            ready_again_s=ready,
            delivery_restored_s=restored,
            **seen,
        )
        assert detected <= DETECT_BOUND
        assert seen["subscriber_closes"] == {}  # filled from history: nobody noticed


async def test_a_black_holed_link_and_its_reconnections_are_given_up_on(
    redis: RedisProcess, make_server: ServerFactory
) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        c.proxies[1].black_hole()  # new links hang too: connect, then silence
        holed, wall = time.monotonic(), time.time()
        detected = await c.detected(1, wall, DETECT_BOUND + 2)
        await c.until_ready(1, False, 5)  # its reconnections hang: not ready meanwhile
        await asyncio.sleep(max(0.0, holed + 2 * BROKER_TIMEOUT - time.monotonic()))  # the fault
        c.proxies[1].heal()
        await c.until_ready(1, True, 15)
        ready = time.monotonic() - holed
        await c.flowing()
        seen = await outcome(c, before)
        record("black hole", detected_s=detected, ready_again_s=ready, **seen)
        assert detected <= DETECT_BOUND
        assert seen["subscriber_closes"] == {}


async def test_a_slow_link_is_not_taken_for_a_dead_one(
    redis: RedisProcess, make_server: ServerFactory
) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        async with c.watching(1) as unready:
            c.proxies[1].latency = 0.25  # each way: a PING's answer takes half a second
            slowed = time.monotonic()
            # Long enough for a dead link to be declared dead: a publication acknowledged after
            # that has reached every subscriber, through the slow link.
            while time.monotonic() - slowed < BROKER_TIMEOUT * 2:
                await c.flowing()
        c.proxies[1].latency = 0
        assert unready == []
        seen = await outcome(c, before)
        assert seen["subscriber_closes"] == {}


async def test_a_stalled_node_is_evicted_and_comes_back_announced(
    redis: RedisProcess, make_server: ServerFactory
) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        stalled_users = {s.user for s in c.subscribers if s.user.startswith("s1-")}
        watcher = c.subscribers[0]
        c.signal(1, signal.SIGSTOP)  # node 1 itself freezes: longer than half the TTL
        stalled = time.monotonic()

        def told(kind: str) -> set[str]:
            return {e["user"] for t, e in watcher.events if t > stalled and e["type"] == kind}

        try:
            await wait_for(lambda: told("member_left") == stalled_users, PRESENCE_TTL + 2)
            evicted = time.monotonic() - stalled
        finally:
            c.signal(1, signal.SIGCONT)
        await wait_for(lambda: told("member_joined") == stalled_users, PRESENCE_TTL + 2)
        back = time.monotonic() - stalled
        await wait_for(lambda: _all_present(c), 5)
        seen = await outcome(c, before)
        record("a node frozen (SIGSTOP)", detected_s=evicted, presence_restored_s=back, **seen)


async def test_a_redis_stall_loses_nothing_acknowledged_and_evicts_nobody(
    redis: RedisProcess, make_server: ServerFactory
) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        await wait_for(lambda: _all_present(c), 10)
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        c.freeze_redis()
        frozen, wall = time.monotonic(), time.time()
        detected = min(
            await asyncio.gather(*(c.detected(n, wall, DETECT_BOUND + 2) for n in (0, 1)))
        )
        await c.until_ready(0, False, 5)
        await asyncio.sleep(max(0.0, frozen + STALL - time.monotonic()))  # the fault itself
        c.thaw_redis()
        thawed_ms = await c.redis_ms()
        for n in (0, 1):
            await c.until_ready(n, True, 15)
        ready = time.monotonic() - frozen
        await c.flowing()
        restored = time.monotonic() - frozen
        # Every node has heartbeat since the thaw: an eviction would have happened by now.
        await wait_for(lambda: c.beaten_since(thawed_ms), PRESENCE_TTL)
        assert await c.direct.zcard("wshub:nodes:evicted") == 0
        assert departures(c, frozen) == []
        members = await c.members()
        assert all(members.get(s.user) == 1 for s in c.subscribers), members
        seen = await outcome(c, before)
        record(
            f"Redis frozen {STALL:g} s (SIGSTOP)",
            detected_s=detected,
            ready_again_s=ready,
            delivery_restored_s=restored,
            presence_events=0,
            **seen,
        )
        assert detected <= DETECT_BOUND
        assert seen["slowest_reply_s"] <= BROKER_TIMEOUT * 2 + 1


async def test_pubsub_connections_killed_by_redis(
    redis: RedisProcess, make_server: ServerFactory
) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        killed, wall = time.monotonic(), time.time()
        assert await c.direct.client_kill_filter(_type="pubsub") == 2
        await c.flowing()
        restored = time.monotonic() - killed
        detected = max([await c.detected(n, wall, 5) for n in (0, 1)])
        seen = await outcome(c, before)
        record("CLIENT KILL TYPE pubsub", detected_s=detected, delivery_restored_s=restored, **seen)
        assert seen["subscriber_closes"] == {}


async def test_a_redis_restart_without_its_data(
    redis: RedisProcess, make_server: ServerFactory
) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        stopped = time.monotonic()
        await asyncio.to_thread(redis.stop)
        detected = await c.until_ready(1, False, DETECT_BOUND)
        await asyncio.to_thread(redis.start)
        for n in (0, 1):
            await c.until_ready(n, True, 15)
        ready = time.monotonic() - stopped
        await c.flowing()
        restored = time.monotonic() - stopped
        # Presence comes back by itself, quietly: nobody was announced gone.
        await wait_for(lambda: _all_present(c), PRESENCE_TTL)
        assert departures(c, stopped) == []
        seen = await outcome(c, before)
        record(
            "Redis restarted, data lost",
            detected_s=detected,
            ready_again_s=ready,
            delivery_restored_s=restored,
            **seen,
        )


async def test_flushall(redis: RedisProcess, make_server: ServerFactory) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        flushed = time.monotonic()
        await c.direct.flushall()
        await c.flowing()
        restored = time.monotonic() - flushed
        await wait_for(lambda: _all_present(c), PRESENCE_TTL)
        present = time.monotonic() - flushed
        assert departures(c, flushed) == []
        seen = await outcome(c, before)
        record(
            "FLUSHALL",
            detected_s=present,
            delivery_restored_s=restored,
            presence_restored_s=present,
            **seen,
        )


async def test_a_node_killed_with_sigkill(redis: RedisProcess, make_server: ServerFactory) -> None:
    async with cluster(redis, make_server) as c:
        await c.subscribe()
        c.publish(0)
        await c.flowing()
        before = [await c.stats(n) for n in range(2)]
        orphans = [s for s in c.subscribers if s.user.startswith("s1-")]
        survivor, victim = c.subscribers[0].node, orphans[0].node
        killed = time.monotonic()
        c.kill(1)
        # Its subscribers resume on node 0 with ``since``; node 1 is evicted within the TTL,
        # which leaves each of those users with their one connection, on node 0.
        await wait_for(lambda: all(s.node == survivor and s.joined.is_set() for s in orphans), 10)
        resumed = time.monotonic() - killed
        await wait_for(lambda: _evicted(c, victim), PRESENCE_TTL + 2)
        evicted = time.monotonic() - killed
        # ... and its presence entries are removed right after, channel by channel.
        await wait_for(lambda: _connections_of(c, orphans, 1), BROKER_TIMEOUT)
        seen = await outcome(c, before, peer_gone=True)
        record(
            "a node killed (SIGKILL)",
            detected_s=evicted,
            delivery_restored_s=resumed,
            **seen,
        )
        assert evicted <= PRESENCE_TTL + 1
        assert all(s.told == 0 for s in orphans)  # resumed from history: recovered: true


async def _all_present(c: Cluster) -> bool:
    members = await c.members()
    return all(members.get(s.user) == 1 for s in c.subscribers)


async def _evicted(c: Cluster, node: str) -> bool:
    return await c.direct.zscore("wshub:nodes", node) is None


async def _connections_of(c: Cluster, subs: list[Subscriber], count: int) -> bool:
    members = await c.members()
    return all(members.get(s.user) == count for s in subs)
