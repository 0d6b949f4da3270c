"""Ordered serving within a bound (wshub.core.serving), and the hub's answers to a stalled broker.

The broker here is the in-memory one, stalled where a test says (an event it waits on); the
real fault, a Redis frozen with SIGSTOP, is in tests/test_stalls.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.test_hub import Peer, settle
from wshub import Hub, Settings
from wshub.brokers import BrokerTimeout, BrokerUnavailable
from wshub.brokers.memory import MemoryBroker
from wshub.core.serving import FrameLine, after_reply, bounded, deadline_in, within
from wshub.model.publication import Publication

# --- bounded --------------------------------------------------------------------------------


async def test_bounded_cuts_a_call_off_at_the_frame_deadline() -> None:
    never = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerTimeout):
        await within(deadline_in(0.2), 1, bounded(never.wait(), effect=True))
    assert 0.15 <= loop.time() - started < 1
    with pytest.raises(BrokerUnavailable) as info:
        await within(deadline_in(0.05), 1, bounded(never.wait(), effect=False))
    assert not isinstance(info.value, BrokerTimeout)  # a read: nothing can have happened


async def test_bounded_makes_no_call_once_the_deadline_has_passed() -> None:
    made: list[str] = []

    async def call() -> str:
        made.append("made")
        return "done"

    late = asyncio.get_running_loop().time() - 1
    with pytest.raises(BrokerUnavailable) as info:
        await within(late, 1, bounded(call(), effect=True))  # never started: not "timeout"
    assert not isinstance(info.value, BrokerTimeout)
    assert made == []
    assert await bounded(call(), effect=True) == "done"  # outside a frame: no bound
    assert await within(None, 0, bounded(call(), effect=True)) == "done"
    assert made == ["made", "made"]


async def test_a_call_that_waits_gets_its_result_and_its_exceptions() -> None:
    async def slow(fail: bool) -> str:
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        if fail:
            raise BrokerUnavailable("refused")
        return "late"

    assert await within(deadline_in(5), 5, bounded(slow(False), effect=True)) == "late"
    with pytest.raises(BrokerUnavailable, match="refused"):
        await within(deadline_in(5), 5, bounded(slow(True), effect=True))
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, future.set_result, 7)
    assert await within(deadline_in(5), 5, bounded(asyncio.shield(future), effect=False)) == 7


async def test_a_timeout_error_of_the_call_itself_is_not_taken_for_the_deadline() -> None:
    async def own_timeout() -> None:
        await asyncio.sleep(0)
        raise TimeoutError("the call's own")

    with pytest.raises(TimeoutError, match="own"):
        await within(deadline_in(5), 5, bounded(own_timeout(), effect=True))


async def test_a_call_dropped_half_way_is_closed_too() -> None:
    closed = asyncio.Event()
    never = asyncio.Event()

    async def call() -> None:
        try:
            await never.wait()
        finally:
            closed.set()

    frame = within(deadline_in(5), 5, bounded(call(), effect=True))
    frame.send(None)  # suspended inside the call, as a task would leave it
    frame.close()  # the task is gone (say, garbage-collected): the call must not leak
    assert closed.is_set()


async def test_a_future_cancelled_inside_the_broker_is_a_broker_failure() -> None:
    async def confirmation_lost(effect: bool) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)
        await within(deadline_in(5), 5, bounded(future, effect=effect))

    with pytest.raises(BrokerTimeout):
        await confirmation_lost(True)
    with pytest.raises(BrokerUnavailable) as info:
        await confirmation_lost(False)
    assert not isinstance(info.value, BrokerTimeout)


async def test_cancelling_the_serving_task_still_cancels_it() -> None:
    never = asyncio.Event()
    for deadline in (None, deadline_in(5)):
        task = asyncio.ensure_future(within(deadline, 5, bounded(never.wait(), effect=True)))
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_clean_ups_run_after_the_work_with_a_deadline_of_their_own() -> None:
    order: list[str] = []
    never = asyncio.Event()

    async def cleanup() -> None:
        order.append("cleanup")
        await bounded(never.wait(), effect=True)  # would hang: its own deadline ends it

    async def work() -> None:
        await after_reply(cleanup)
        order.append("reply")

    await within(asyncio.get_running_loop().time() - 1, 0.1, work())
    assert order == ["reply", "cleanup"]

    async def note() -> None:
        order.append("at once")

    await after_reply(note)  # outside a frame: at once
    assert order[-1] == "at once"


# --- the line -------------------------------------------------------------------------------


async def test_a_frame_the_broker_could_not_serve_does_not_stop_the_line() -> None:
    done: list[str | None] = []

    async def serve(text: str | None, deadline: float | None) -> None:
        if text == "chat line during an outage":
            raise BrokerUnavailable("down")
        done.append(text)

    line = FrameLine(serve, timeout=5)
    greeted = asyncio.Event()

    async def greet() -> None:
        await asyncio.sleep(0)
        greeted.set()

    line.open_with(greet())
    await line.put("chat line during an outage")
    await line.put("next")
    await line.finish()
    assert greeted.is_set() and done == ["next"]


class Served:
    """What a line served, and a gate that holds the serving of frames named ``hold*``."""

    def __init__(self) -> None:
        self.done: list[str | None] = []
        self.gate = asyncio.Event()
        self.deadlines: list[float | None] = []

    async def __call__(self, text: str | None, deadline: float | None) -> None:
        self.deadlines.append(deadline)
        if text is not None and text.startswith("hold"):
            await self.gate.wait()
        if text == "boom":
            raise RuntimeError("a bug in one frame")
        self.done.append(text)


async def test_the_line_serves_in_order_while_put_returns_at_once() -> None:
    served = Served()
    line = FrameLine(served, timeout=5)
    await line.put("hold-1")
    for text in ("a", None, "boom", "b"):
        await asyncio.wait_for(line.put(text), 1)  # the receive loop is never held up
    await settle()
    assert served.done == [] and line.waiting == 4
    served.gate.set()
    await line.finish()
    assert served.done == ["hold-1", "a", None, "b"]  # "boom" failed alone
    now = asyncio.get_running_loop().time()
    assert all(d is not None and now < d <= now + 5 for d in served.deadlines)


async def test_a_full_line_holds_the_receive_loop_until_a_frame_is_taken() -> None:
    served = Served()
    line = FrameLine(served, timeout=0, bound=2)
    await line.put("hold-1")
    await settle()  # "hold-1" is being served: the line itself is empty
    await line.put("x")
    await line.put("y")
    third = asyncio.ensure_future(line.put("z"))
    await settle()
    assert not third.done() and line.waiting == 2
    served.gate.set()
    await asyncio.wait_for(third, 1)
    await line.finish()
    assert served.done == ["hold-1", "x", "y", "z"]
    assert served.deadlines == [None] * 4  # timeout 0: no bound


async def test_finish_cancelled_cancels_the_serving() -> None:
    served = Served()
    line = FrameLine(served, timeout=5)
    await line.put("hold-1")
    await line.put("after")
    finishing = asyncio.ensure_future(line.finish())
    await settle()
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    await settle()
    served.gate.set()
    await settle()
    assert served.done == []
    await line.finish()  # nothing left: returns at once


# --- the hub under a stalled broker ----------------------------------------------------------


class StalledBroker(MemoryBroker):
    """The in-memory broker, with calls that wait while ``stalled`` names them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stalled: set[str] = set()
        self.thaw = asyncio.Event()
        self.publishes = 0

    async def _maybe_stall(self, name: str) -> None:
        if name in self.stalled:
            await self.thaw.wait()

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        await self._maybe_stall("publish")
        self.publishes += 1
        return await super().publish(channel, data, sender, idempotency_key)

    async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Any:
        await self._maybe_stall("recover")
        return await super().recover(channel, offset, epoch)

    async def presence_add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        await self._maybe_stall("presence_add")
        return await super().presence_add(channel, user, session, meta)

    async def presence_remove(self, channel: str, user: str, session: str) -> bytes | None:
        await self._maybe_stall("presence_remove")
        return await super().presence_remove(channel, user, session)


@pytest.fixture
async def stalled() -> Any:
    broker = StalledBroker()
    hub = Hub(broker, Settings(reply_timeout=0.3))
    await hub.start()
    yield hub, broker
    broker.thaw.set()
    await hub.stop()


async def say_within(peer: Peer, frame: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Serve a frame under ``deadline`` and return its reply, checking it came in time."""
    loop = asyncio.get_running_loop()
    await peer.hub.handle_text(peer.conn, _json(frame), deadline)
    assert loop.time() < deadline + 0.5
    await settle()
    return peer.link.sent[-1]


def _json(frame: dict[str, Any]) -> str:
    return json.dumps(frame)


async def test_a_stalled_publish_is_answered_timeout_in_time(stalled: Any) -> None:
    hub, broker = stalled
    broker.stalled.add("publish")
    a = Peer(hub, "a")
    frame = {"type": "publish", "channel": "c", "data": 1, "id": 7}
    reply = await say_within(a, frame, deadline_in(0.3) or 0)
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "timeout", 7)
    assert "idempotency_key" in reply["message"]
    assert broker.publishes == 0  # the call was pending, not refused: so "timeout"


async def test_a_frame_that_waited_past_its_deadline_is_unavailable_and_not_made(
    stalled: Any,
) -> None:
    hub, broker = stalled
    a = Peer(hub, "a")
    late = asyncio.get_running_loop().time() - 0.01
    frame = {"type": "publish", "channel": "c", "data": 1, "id": 8}
    await hub.handle_text(a.conn, _json(frame), late)
    await settle()
    assert (a.link.sent[-1]["code"], a.link.sent[-1]["id"]) == ("unavailable", 8)
    assert broker.publishes == 0 and len(broker._logs) == 0
    await hub.handle_text(a.conn, _json({"type": "ping", "id": 9}), late)
    await settle()
    assert a.link.sent[-1] == {"type": "pong", "id": 9}  # no broker needed: served


async def test_a_join_stalled_in_recovery_is_unavailable_and_leaves_nothing(stalled: Any) -> None:
    hub, broker = stalled
    broker.stalled.add("recover")
    a = Peer(hub, "a")
    reply = await say_within(a, {"type": "join", "channel": "c", "id": 1}, deadline_in(0.3) or 0)
    assert (reply["code"], reply["id"]) == ("unavailable", 1)
    assert a.conn.channels == {} and hub.channel_counts() == {}
    broker.stalled.clear()
    assert (await a.say({"type": "join", "channel": "c", "id": 2}))["type"] == "joined"


async def test_a_join_stalled_in_presence_is_timeout_and_undone_after_the_reply(
    stalled: Any,
) -> None:
    hub, broker = stalled
    broker.stalled.add("presence_add")
    a = Peer(hub, "a")
    reply = await say_within(a, {"type": "join", "channel": "c", "id": 1}, deadline_in(0.3) or 0)
    assert (reply["code"], reply["id"]) == ("timeout", 1)
    assert a.conn.channels == {} and hub.channel_counts() == {}
    assert await broker.presence("c") == []


async def test_library_publish_and_leave_are_bounded_too(stalled: Any) -> None:
    hub, broker = stalled
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c", "id": 1})
    broker.stalled.add("publish")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerTimeout):
        await hub.publish("c", "x", idempotency_key="k")
    assert loop.time() - started < 0.3 + 0.5
    broker.stalled.add("presence_remove")
    reply = await say_within(a, {"type": "leave", "channel": "c", "id": 2}, deadline_in(0.3) or 0)
    assert reply == {"type": "left", "channel": "c", "id": 2}  # left here; presence: best effort
    assert a.conn.channels == {}


async def test_a_publish_after_a_thaw_is_served(stalled: Any) -> None:
    hub, broker = stalled
    broker.stalled.add("publish")
    a = Peer(hub, "a")
    pending = asyncio.ensure_future(
        hub.handle_text(a.conn, _json({"type": "publish", "channel": "c", "data": 1, "id": 1}))
    )
    await settle()
    broker.thaw.set()  # no deadline given: the broker's own time bounds it
    await pending
    await settle()
    assert (a.link.sent[-1]["type"], a.link.sent[-1]["offset"]) == ("ack", 1)


# --- idempotent publishing on the in-memory broker -------------------------------------------


async def test_a_repeated_key_is_answered_as_the_first_and_published_once() -> None:
    hub = Hub("memory://")
    await hub.start()
    a, b = Peer(hub, "a"), Peer(hub, "b")
    await b.say({"type": "join", "channel": "c", "id": 0})
    frame = {"type": "publish", "channel": "c", "data": "x", "idempotency_key": "k1", "id": 1}
    first = await a.say(frame)
    again = await a.say({**frame, "id": 2, "data": "y"})
    assert first["type"] == again["type"] == "ack"
    assert {**again, "id": 1} == first
    assert first["epoch"] == b.link.of_type("joined")[0]["epoch"]
    other = await a.say({**frame, "channel": "d", "id": 3})
    assert other["offset"] == 1  # the key is remembered per channel
    plain = await a.say({"type": "publish", "channel": "c", "data": "z", "id": 4})
    assert plain["offset"] == 2
    assert [m["data"] for m in b.link.of_type("message")] == ["x", "z"]
    assert await hub.publish("c", "lib", idempotency_key="k1") == 1
    assert await hub.publish("c", "lib", idempotency_key="k2") == 3
    assert await hub.publish("c", "lib", idempotency_key="k2") == 3
    with pytest.raises(ValueError, match="idempotency_key"):
        await hub.publish("c", "lib", idempotency_key="k" * 65)
    await hub.stop()


@pytest.mark.parametrize(
    "key", ["", "k" * 65, 7, None, ["k"]], ids=["empty", "65", "int", "null", "list"]
)
async def test_an_invalid_key_is_bad_request(key: Any) -> None:
    hub = Hub("memory://")
    await hub.start()
    a = Peer(hub, "a")
    reply = await a.say(
        {"type": "publish", "channel": "c", "data": 1, "idempotency_key": key, "id": 5}
    )
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", 5)
    assert "idempotency_key" in reply["message"]
    ok = await a.say({"type": "publish", "channel": "c", "data": 1, "idempotency_key": "é" * 64})
    assert ok["type"] == "ack"  # 64 characters, not bytes
    await hub.stop()


async def test_keys_are_forgotten_after_the_ttl() -> None:
    broker = MemoryBroker(idempotency_ttl=300)
    first = await broker.publish("c", b"1", None, "k")
    assert (await broker.publish("c", b"1", None, "k")).offset == first.offset
    loop_now = asyncio.get_running_loop().time()  # monotonic, as the broker's clock
    broker.sweep(loop_now + 301)
    assert broker._keys == {}
    assert (await broker.publish("c", b"1", None, "k")).offset == first.offset + 1
    broker.idempotency_ttl = 0  # a record that expires at once is never matched
    second = await broker.publish("c", b"1", None, "z")
    assert (await broker.publish("c", b"1", None, "z")).offset == second.offset + 1
