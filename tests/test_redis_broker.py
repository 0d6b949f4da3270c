"""The Redis broker on its own, against a real redis-server: what its failures mean.

``unavailable`` only when the command surely did not reach Redis, ``timeout`` when it was sent
and not answered (it may have run); a listener that survives whatever happens to it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.proxy import TcpProxy
from tests.support import RedisProcess
from wshub.brokers import BrokerTimeout, BrokerUnavailable
from wshub.brokers.redis import RedisBroker
from wshub.brokers.redis.listener import Listener
from wshub.model.config import Settings
from wshub.model.publication import Publication

TIMEOUT = 1.0


class Sink:
    """Records deliveries; ``explode`` makes the next delivery raise, as a bug would."""

    def __init__(self) -> None:
        self.delivered: list[Publication] = []
        self.resyncs = 0
        self.explode = False
        self.placements: list[tuple[str, str, str]] = []

    def deliver(self, pub: Publication) -> None:
        if self.explode:
            self.explode = False
            raise RuntimeError("a bug in a delivery")
        self.delivered.append(pub)

    def deliver_event(self, channel: str, frame: str, exclude_user: str | None) -> None:
        pass

    def deliver_direct(self, user: str, frame: str) -> None:
        pass

    def deliver_kick(self, user: str) -> None:
        pass

    def deliver_subscribe(self, user: str, channel: str) -> None:
        self.placements.append(("subscribe", user, channel))

    def deliver_unsubscribe(self, user: str, channel: str) -> None:
        self.placements.append(("unsubscribe", user, channel))

    def resync(self) -> None:
        self.resyncs += 1


@contextlib.asynccontextmanager
async def broker(url: str, sink: Any = None) -> AsyncIterator[RedisBroker]:
    b = RedisBroker(url, Settings(broker_timeout=TIMEOUT, presence_ttl=4))
    await b.start(sink or Sink())
    try:
        yield b
    finally:
        await b.close()


async def until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_subscribe_user_reaches_the_nodes_that_watch_the_user(redis: RedisProcess) -> None:
    watching, other = Sink(), Sink()
    async with broker(redis.url, watching) as a, broker(redis.url, other) as b:
        await a.watch("ann")
        await b.subscribe_user("ann", "news:1")
        await b.unsubscribe_user("ann", "news:1")
        await b.subscribe_user("bob", "news:1")  # nobody watches bob: told to no node
        await until(lambda: len(watching.placements) == 2)
        assert watching.placements == [
            ("subscribe", "ann", "news:1"),
            ("unsubscribe", "ann", "news:1"),
        ]
        await a.watch("bob")
        await b.subscribe_user("bob", "x")  # after the unwatched one: ordered on one link
        await until(lambda: len(watching.placements) == 3)
        assert watching.placements[2] == ("subscribe", "bob", "x")
        assert other.placements == []


async def test_refused_is_unavailable_and_frozen_is_timeout(redis: RedisProcess) -> None:
    async with broker(redis.url) as b:
        await b.publish("c", b"1", None)
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(BrokerTimeout):  # sent: it may run when Redis wakes
                await b.publish("c", b"2", None)
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        # It did run, once: Redis read it before the connection was given up.
        _, pubs = await b.history("c", None, None, 10)
        assert [p.data for p in pubs] in ([b"1"], [b"1", b"2"])
        await asyncio.to_thread(redis.stop)  # the event loop sees each connection close
        with pytest.raises(BrokerUnavailable) as refused:
            await b.publish("c", b"3", None)
        assert not isinstance(refused.value, BrokerTimeout)  # known not published


async def test_a_delivery_that_raises_does_not_stop_the_stream(redis: RedisProcess) -> None:
    sink = Sink()
    async with broker(redis.url, sink) as b, broker(redis.url) as publisher:
        await b.subscribe("c")
        sink.explode = True
        for i in range(3):
            await publisher.publish("c", str(i).encode(), None)
        await until(lambda: len(sink.delivered) == 2)
        assert [p.offset for p in sink.delivered] == [2, 3]
        assert b.ready


async def test_a_listener_that_dies_is_started_again(redis: RedisProcess) -> None:
    sink = Sink()
    async with broker(redis.url, sink) as b, broker(redis.url) as publisher:
        await b.subscribe("c")
        first = b._tasks["listener"]
        listener = b._listening()
        deliver, calls = listener.on_message, []

        def dies_once(message: dict[str, Any]) -> None:
            calls.append(message)
            if len(calls) == 1:
                raise asyncio.CancelledError  # not an Exception: it ends the task
            deliver(message)

        listener.on_message = dies_once
        await publisher.publish("c", b"lost", None)
        await until(lambda: b._tasks["listener"] is not first and sink.resyncs == 1 and b.ready)
        await publisher.publish("c", b"after", None)
        await until(lambda: [p.data for p in sink.delivered] == [b"after"])


async def test_a_join_during_a_lost_link_fails_as_unavailable_not_cancelled(
    redis: RedisProcess,
) -> None:
    proxy = await TcpProxy(redis.port).start()
    sink = Sink()
    try:
        async with broker(f"redis://127.0.0.1:{proxy.port}/0", sink) as b:
            started = time.monotonic()
            proxy.sever()
            with pytest.raises(BrokerUnavailable):
                await b.subscribe("c")
            assert time.monotonic() - started <= 2 * TIMEOUT + 1.5
            await until(lambda: not b.ready, 3 * TIMEOUT + 1)
            await until(lambda: b.ready and sink.resyncs == 1)  # new links work
            listener = b._listening()
            assert isinstance(listener, Listener)
            assert listener._confirmed.keys() <= {b.keys.node(b.node), b"wshub:{c}:pub"}
            await b.unsubscribe("c")
            assert b"wshub:{c}:pub" not in listener._confirmed
    finally:
        await proxy.close()


async def test_a_channel_left_leaves_the_nodes_channel_set(redis: RedisProcess) -> None:
    async with broker(redis.url) as b:
        chans = f"wshub:node:{b.node}:chans"
        assert await b.presence_add("c", "ann", "s1", b"null")
        assert not await b.presence_add("c", "ann", "s2", b"null")  # her second connection
        await b.presence_remove("c", "ann", "s1")
        assert await b._redis.smembers(chans) == {b"c"}
        assert await b.presence_remove("c", "ann", "s2") == b"null"  # her last: she left
        assert await b._redis.smembers(chans) == set()
        assert await b.channels() == {}


def dies_once(real: Any) -> Any:
    """``real``, except that its first call ends the task it runs in, as anything might."""
    calls = 0

    async def call(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError
        return await real(*args)

    return call


async def test_a_heartbeat_that_dies_is_started_again(redis: RedisProcess) -> None:
    async with broker(redis.url) as b:
        first = b._tasks["heartbeat"]
        b._presence.beat = dies_once(b._presence.beat)  # type: ignore[method-assign]
        await until(lambda: b._tasks["heartbeat"] is not first)
        seconds, _ = await b._redis.time()
        deadline = time.monotonic() + 5
        while (await b._redis.zscore("wshub:nodes", b.node) or 0) < int(seconds) * 1000:
            assert time.monotonic() < deadline, "the new heartbeat did not beat"
            await asyncio.sleep(0.05)
