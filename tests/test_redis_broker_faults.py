"""The Redis broker's edges, against a real redis-server: a link that dies while the listener
sets up or goes silent later, Redis frozen while the broker closes, direct sends, and what
arrives on its pub/sub channels that is not a publication."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from tests.proxy import TcpProxy
from tests.support import RedisProcess
from tests.test_redis_broker import TIMEOUT, Sink, broker, until
from wshub.brokers import BrokerUnavailable
from wshub.brokers.redis import RedisBroker
from wshub.brokers.redis.broker import _end
from wshub.model.config import Settings

DETECT = TIMEOUT + 2.0
"""A silent link is given up after the timeout; the rest is polling and a loaded machine."""


class Recorder(Sink):
    """A sink that also records direct sends and forced disconnects, in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def deliver_direct(self, user: str, frame: str) -> None:
        self.seen.append(("direct", f"{user} {frame}"))

    def deliver_kick(self, user: str) -> None:
        self.seen.append(("disconnect", user))


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the same Redis: another program, or the test's own eyes."""
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def until_alone(client: aioredis.Redis) -> None:
    """Wait until Redis holds no connection but ``client``'s: it sees each close in turn."""
    deadline = time.monotonic() + 5
    while len(await client.client_list()) > 1:
        assert time.monotonic() < deadline, await client.client_list()
        await asyncio.sleep(0.05)


async def test_a_broker_not_started_refuses_joins_and_closes_cleanly(
    redis: RedisProcess,
) -> None:
    b = RedisBroker(redis.url, Settings(broker_timeout=TIMEOUT))
    assert not b.ready
    with pytest.raises(BrokerUnavailable):
        await b.subscribe("c")
    assert await b.cluster_stats() == []  # nobody shared any: an empty Redis has none
    await b.close()
    async with raw(redis.url) as r:
        await until_alone(r)


async def test_direct_sends_and_disconnects_reach_only_a_watching_node(
    redis: RedisProcess,
) -> None:
    sink = Recorder()
    async with broker(redis.url, sink) as a, broker(redis.url) as b:
        await a.watch("ann")
        await b.send("ann", '{"type":"message"}')
        await b.kick("ann")
        await until(lambda: len(sink.seen) == 2)
        assert sink.seen == [("direct", 'ann {"type":"message"}'), ("disconnect", "ann")]
        await a.unwatch("ann")
        await a.subscribe("c")
        await b.send("ann", "late")  # before the publication, on the same Redis
        await b.publish("c", b"marker", None)
        await until(lambda: len(sink.delivered) == 1)  # so the send would have come by now
        assert len(sink.seen) == 2


async def test_what_is_not_a_publication_on_its_channels_is_ignored(
    redis: RedisProcess,
) -> None:
    sink = Recorder()
    async with broker(redis.url, sink) as b, raw(redis.url) as other:
        await b.subscribe("c")
        await b.watch("ann")
        # Another program writes on the node's own channel and on the broker's, in no format
        # the broker knows.
        assert await other.publish(f"wshub:node:{b.node}", b"m1 2 3 4\nhello") == 1
        assert await other.publish("wshub:{c}:pub", b"?what") == 1
        assert await other.publish("wshub:user:{ann}", b"?what") == 1
        await b.publish("c", b"real", None)
        await until(lambda: len(sink.delivered) == 1)
        assert [(p.channel, p.offset, p.data) for p in sink.delivered] == [("c", 1, b"real")]
        assert sink.seen == []
        assert b.ready


async def test_two_joins_of_one_channel_at_once_are_both_confirmed(redis: RedisProcess) -> None:
    sink = Sink()
    async with broker(redis.url, sink) as b, broker(redis.url) as publisher:
        await asyncio.gather(b.subscribe("c"), b.subscribe("c"))
        await publisher.publish("c", b"1", None)
        await until(lambda: [p.data for p in sink.delivered] == [b"1"])


async def test_a_link_that_dies_while_subscribing_is_replaced(redis: RedisProcess) -> None:
    proxy = await TcpProxy(redis.port).start()
    sink = Sink()
    try:
        async with (
            broker(f"redis://127.0.0.1:{proxy.port}/0", sink) as b,
            broker(redis.url) as publisher,
        ):
            await b.subscribe("c")
            # New links get through their handshake, then carry nothing from SUBSCRIBE on.
            proxy.deafen_on = b"SUBSCRIBE"
            proxy.cut()
            await until(lambda: proxy.deafened == 1)  # a new session waits for confirmations
            assert not b.ready
            tried = time.monotonic()
            with pytest.raises(BrokerUnavailable):  # answered within the timeout, not hung
                await b.subscribe("d")
            assert time.monotonic() - tried <= TIMEOUT + 1
            await b.unsubscribe("d")  # the join failed: its channel is not wanted any more
            await until(lambda: proxy.deafened == 2, 3 * TIMEOUT + 3)  # given up, tried again
            proxy.deafen_on = None
            await until(lambda: b.ready and sink.resyncs == 1, 4 * TIMEOUT + 5)
            await publisher.publish("d", b"d1", None)
            for data in (b"c1", b"c2"):
                await publisher.publish("c", data, None)
            await until(lambda: len(sink.delivered) == 2)  # after d1, on the same link
            assert [(p.offset, p.data) for p in sink.delivered] == [(1, b"c1"), (2, b"c2")]
    finally:
        await proxy.close()


async def test_a_link_gone_silent_is_found_and_replaced(redis: RedisProcess) -> None:
    proxy = await TcpProxy(redis.port).start()
    sink = Sink()
    try:
        async with (
            broker(f"redis://127.0.0.1:{proxy.port}/0", sink) as b,
            broker(redis.url) as publisher,
        ):
            await b.subscribe("c")
            await until(lambda: b.ready)
            proxy.black_hole()
            holed = time.monotonic()
            await publisher.publish("c", b"lost", None)  # acknowledged, never heard
            await until(lambda: not b.ready, DETECT + 1)
            assert time.monotonic() - holed <= DETECT
            proxy.heal()
            await until(lambda: b.ready and sink.resyncs == 1, 4 * TIMEOUT + 5)
            await publisher.publish("c", b"after", None)
            await until(lambda: len(sink.delivered) == 1)
            # The hub learns of the gap from resync(): "lost" comes from history, not here.
            assert [p.data for p in sink.delivered] == [b"after"]
            assert sink.delivered[0].offset == 2
    finally:
        await proxy.close()


async def test_a_quiet_link_is_asked_at_a_third_of_the_timeout_and_stays_ready(
    redis: RedisProcess,
) -> None:
    timeout = 4.0  # reads wait 1 s at most: the first silent ones are not yet worth a PING
    b = RedisBroker(redis.url, Settings(broker_timeout=timeout, presence_ttl=60))
    await b.start(Sink())
    try:
        async with raw(redis.url) as r:
            await b.subscribe("c")  # Redis' confirmation is the last word heard
            heard = time.monotonic()
            deadline = heard + timeout
            while not [c for c in await r.client_list("pubsub") if c["cmd"] == "ping"]:
                assert time.monotonic() < deadline, "the quiet link was not asked"
                assert b.ready
                await asyncio.sleep(0.05)
            assert time.monotonic() - heard >= timeout / 3 - 0.1
            assert b.ready
    finally:
        await b.close()


async def test_a_broker_closes_in_bounded_time_on_a_frozen_redis(redis: RedisProcess) -> None:
    b = RedisBroker(redis.url, Settings(broker_timeout=TIMEOUT, presence_ttl=4))
    await b.start(Sink())
    await b.subscribe("c")
    assert await b.presence_add("c", "ann", "s1", b"null")
    assert redis.proc is not None
    async with raw(redis.url) as r:
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            await b.close()  # its leave is sent and never answered
            closed = time.monotonic() - started
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        assert closed <= 2 * TIMEOUT + 1
        assert all(task.done() for task in b._tasks.values())
        assert not b.ready
        await until_alone(r)


async def test_a_heartbeat_that_fails_by_a_bug_is_logged_and_beats_again(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async with broker(redis.url) as b:
        real, calls = b._presence.beat, 0

        async def fails_once() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ValueError("a bug in a heartbeat")
            await real()

        b._presence.beat = fails_once  # type: ignore[method-assign]
        await until(lambda: calls >= 2)
        first = b._tasks["heartbeat"]
        seconds, _ = await b._redis.time()
        deadline = time.monotonic() + 5
        while (await b._redis.zscore("wshub:nodes", b.node) or 0) < int(seconds) * 1000:
            assert time.monotonic() < deadline, "the heartbeat did not beat again"
            await asyncio.sleep(0.05)
        assert b._tasks["heartbeat"] is first  # the same loop: it did not have to restart
        failures = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in failures] == ["a Redis heartbeat failed"]


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    # As redis-py 8.1 can do when a cancellation lands inside a command.
    cancels = 0

    async def swallows_twice() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 3:
                    raise

    task = asyncio.get_running_loop().create_task(swallows_twice())
    await asyncio.sleep(0)
    await _end(task)
    assert task.cancelled() and cancels == 3


async def test_a_task_that_will_not_stop_is_given_up_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    await _end(task)
    assert time.monotonic() - started < 10  # close() goes on
    assert not task.done()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["a Redis task did not stop"]
    release.set()
    await task
