"""Rare fault interleavings around a gap (wshub.gaps, wshub.channel), produced on purpose by
holding or failing one broker call at a time (tests/staged_broker.py). Each test checks what a
subscriber sees: every message once and in order, or a 1011 close whose resume tells the truth,
and a channel that goes on delivering afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.staged_broker import StagedBroker
from tests.test_hub import Peer
from wshub import Hub
from wshub.brokers import BrokerTimeout, BrokerUnavailable
from wshub.model.config import Settings

MISSED = (1011, "missed messages: rejoin")


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def joined(hub: Hub, user: str, **join: Any) -> Peer:
    peer = Peer(hub, user)
    reply = await peer.say({"type": "join", "channel": "c", **join})
    assert reply["type"] in ("joined", "message"), reply
    return peer


def offsets(peer: Peer) -> list[int]:
    return [m["offset"] for m in peer.link.of_type("message")]


def task_of(hub: Hub, name: str) -> asyncio.Task[Any]:
    (task,) = [t for t in hub._tasks if t.get_coro().__qualname__.endswith(name)]  # type: ignore[union-attr]
    return task


async def started(broker: StagedBroker | None = None, **settings: Any) -> tuple[StagedBroker, Hub]:
    broker = broker or StagedBroker()
    hub = Hub(broker, Settings(**settings))
    await hub.start()
    return broker, hub


async def test_a_second_gap_found_while_releasing_held_messages_is_filled_too() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    broker.lose = {2, 5}
    history = broker.hold("history")
    for i in range(2, 8):
        await hub.publish("c", i)
    await history.wait_reached()  # the repair of 2 waits; 3, 4, 6, 7 are held behind it
    held = hub._subscriptions.channels["c"].held
    assert held is not None and [p.offset for p in held] == [3, 4, 6, 7]
    history.open()  # releasing 3, 4 then 6 finds that 5 is missing as well
    await until(lambda: len(offsets(a)) >= 7)
    assert offsets(a) == [1, 2, 3, 4, 5, 6, 7]
    assert broker.calls["history"] == 2
    await hub.publish("c", 8)
    await until(lambda: len(offsets(a)) >= 8)
    assert offsets(a) == list(range(1, 9)) and a.link.closed is None
    await hub.stop()


async def test_a_repair_cancelled_while_holding_closes_and_the_resume_recovers_all() -> None:
    broker, hub = await started(queue_size=8)
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    broker.lose = {2}
    history = broker.hold("history")
    for i in range(2, 10):
        await hub.publish("c", i)
    await history.wait_reached()
    ch = hub._subscriptions.channels["c"]
    assert ch.held is not None and len(ch.held) == 4  # 3..6; 7..9 overflowed, 9 kept behind
    task_of(hub, "repair").cancel()
    await until(lambda: a.link.closed is not None)
    assert a.link.closed == MISSED
    assert ch.held is None and ch.behind is None and ch.last_offset == 9
    # The resume gets exactly what the closed subscriber missed, then what follows.
    epoch = a.link.of_type("message")[0]["epoch"]
    again = await joined(hub, "a", since={"offset": 1, "epoch": epoch})
    assert again.link.of_type("joined")[0]["recovered"] is True
    assert offsets(again) == list(range(2, 10))
    await hub.publish("c", 10)
    await until(lambda: len(offsets(again)) >= 9)
    assert offsets(again) == list(range(2, 11)) and again.link.closed is None
    await hub.stop()


async def test_a_resync_cancelled_while_its_repair_holds_nothing_yet_leaves_the_stream_whole() -> (
    None
):
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    broker.lose = {2}
    await hub.publish("c", 2)  # lost, and nothing after it shows the gap
    history = broker.hold("history")
    hub.resync()
    await history.wait_reached()  # the position check found 2 and holds while it fetches it
    ch = hub._subscriptions.channels["c"]
    assert ch.held == []
    task_of(hub, "_catch_up").cancel()
    await until(lambda: a.link.closed is not None)
    assert a.link.closed == MISSED
    assert ch.held is None and ch.last_offset == 1 and not ch.syncing
    b = await joined(hub, "b")  # joined at 2, which this node's stream has not reached
    broker.lose = set()
    await hub.publish("c", 3)  # shows the gap at 2: filled, and b gets only what is after 2
    await until(lambda: len(offsets(b)) >= 1)
    assert offsets(b) == [3] and b.link.closed is None
    await hub.stop()


async def test_a_resync_during_a_repair_looks_again_once_the_repair_is_done() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    broker.lose = {2, 4}
    history = broker.hold("history")
    await hub.publish("c", 2)
    await hub.publish("c", 3)
    await history.wait_reached()  # repairing 2; meanwhile 4 is lost with nothing after it
    await hub.publish("c", 4)
    hub.resync()  # finds 4, but the channel is already holding: it must look again later
    ch = hub._subscriptions.channels["c"]
    await until(lambda: broker.calls.get("recover", 0) >= 2)  # the join's and the check's
    history.open()
    await until(lambda: not ch.syncing and len(offsets(a)) >= 4)
    await hub.publish("c", 5)  # and nothing is delivered twice before it
    await until(lambda: len(offsets(a)) >= 5)
    assert offsets(a) == [1, 2, 3, 4, 5] and a.link.closed is None
    await hub.stop()


async def test_a_new_epoch_whose_first_messages_were_lost_is_filled_from_offset_one() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", "old")
    old = hub._subscriptions.channels["c"].epoch
    broker.flush()  # the broker restarts the channel in a new epoch ...
    broker.lose = {1}  # ... and its first publication never reaches this node
    await hub.publish("c", "new-1")
    await hub.publish("c", "new-2")
    await until(lambda: len(offsets(a)) >= 3)
    got = [(m["epoch"], m["offset"], m["data"]) for m in a.link.of_type("message")]
    new = got[1][0]
    assert new != old
    assert got == [(old, 1, "old"), (new, 1, "new-1"), (new, 2, "new-2")]
    assert a.link.closed is None
    await hub.stop()


async def test_a_joiner_in_a_newer_epoch_than_the_node_gets_only_its_epoch() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", "old-1")
    broker.delay()  # the node's pub/sub runs late from here
    await hub.publish("c", "old-2")
    broker.flush()
    await hub.publish("c", "new-1")
    b = await joined(hub, "b")  # reads the new epoch at 1; the node is still at old 1
    joined_b = b.link.of_type("joined")[0]
    assert joined_b["offset"] == 1
    broker.release()  # old-2 reaches the node: a gets it, b (in the new epoch) must not
    await hub.publish("c", "new-2")
    await until(lambda: len(offsets(b)) >= 1 and len(offsets(a)) >= 4)
    assert [(m["epoch"], m["data"]) for m in b.link.of_type("message")] == [
        (joined_b["epoch"], "new-2")
    ]
    assert [m["data"] for m in a.link.of_type("message")] == ["old-1", "old-2", "new-1", "new-2"]
    assert a.link.closed is None and b.link.closed is None
    await hub.stop()


async def test_a_position_check_stops_retrying_once_nobody_listens() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    broker.fail("recover", *(BrokerUnavailable("down") for _ in range(1000)))
    hub.resync()
    ch = hub._subscriptions.channels["c"]
    await until(lambda: broker.faults_left("recover") <= 998)  # retrying
    await a.say({"type": "leave", "channel": "c"})
    await until(lambda: not ch.syncing and not hub._tasks)  # ended: it asks no more
    assert "c" not in hub._subscriptions.channels
    broker._faults.clear()
    b = await joined(hub, "b")  # a channel of the same name later is a new one, and works
    await hub.publish("c", 2)
    await until(lambda: len(offsets(b)) >= 1)
    assert offsets(b) == [2]
    await hub.stop()


async def test_a_joiner_of_a_flushed_channel_gets_its_first_message_before_the_node_knew() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", "old")
    broker.flush()
    b = await joined(hub, "b")  # the new, empty epoch at 0; this node's stream is still old
    joined_b = b.link.of_type("joined")[0]
    assert joined_b["offset"] == 0
    await hub.publish("c", "new-1")
    await hub.publish("c", "new-2")
    await until(lambda: len(offsets(b)) >= 2 and len(offsets(a)) >= 3)
    assert [(m["epoch"], m["offset"]) for m in b.link.of_type("message")] == [
        (joined_b["epoch"], 1),
        (joined_b["epoch"], 2),
    ]
    assert [m["data"] for m in a.link.of_type("message")] == ["old", "new-1", "new-2"]
    await hub.stop()


async def test_a_joiner_ahead_of_the_node_gets_each_later_message_once() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    broker.delay()
    await hub.publish("c", 2)
    await hub.publish("c", 3)
    b = await joined(hub, "b")  # at 3, while 2 and 3 are still on their way to this node
    assert b.link.of_type("joined")[0]["offset"] == 3
    await joined(hub, "c")  # b, still waiting for the node to catch up, sees c arrive
    await until(lambda: bool(b.link.of_type("member_joined")))
    assert [m["user"] for m in b.link.of_type("member_joined")] == ["c"]
    await hub.publish("c", 4)
    broker.release()
    await hub.publish("c", 5)
    await until(lambda: len(offsets(b)) >= 2 and len(offsets(a)) >= 5)
    assert offsets(b) == [4, 5] and offsets(a) == [1, 2, 3, 4, 5]
    await hub.stop()


async def test_a_delivery_for_a_channel_left_meanwhile_reaches_nobody() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    broker.delay()
    await hub.publish("c", 1)
    await a.say({"type": "leave", "channel": "c"})
    assert "c" not in hub._subscriptions.channels
    broker.release()  # the late delivery of 1: nobody here listens any more
    b = await joined(hub, "b")
    await hub.publish("c", 2)
    await until(lambda: len(offsets(b)) >= 1)
    assert offsets(a) == [] and offsets(b) == [2]
    await hub.stop()


async def test_a_gap_whose_history_was_flushed_meanwhile_closes_and_the_resume_says_so() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    broker.lose = {2}
    history = broker.hold("history")
    await hub.publish("c", 2)
    await hub.publish("c", 3)
    await history.wait_reached()
    epoch = a.link.of_type("message")[0]["epoch"]
    broker.flush()  # what the repair asks for is gone: history answers in a new epoch
    history.open()
    await until(lambda: a.link.closed is not None)
    assert a.link.closed == MISSED
    again = await joined(hub, "a", since={"offset": 1, "epoch": epoch})
    assert again.link.of_type("joined")[0]["recovered"] is False  # the truth: 2 is lost
    broker.lose = set()
    await hub.publish("c", "new-1")
    await until(lambda: len(offsets(again)) >= 1)
    assert [m["data"] for m in again.link.of_type("message")] == ["new-1"]
    assert again.link.closed is None
    await hub.stop()


async def test_a_resync_while_the_first_join_subscribes_checks_nothing_and_the_join_works() -> None:
    broker, hub = await started()
    await hub.publish("c", 1)
    subscribe = broker.hold("subscribe")
    a = Peer(hub, "a")
    join = asyncio.ensure_future(a.say({"type": "join", "channel": "c"}))
    await subscribe.wait_reached()
    hub.resync()  # this node does not know the channel's position yet: nothing to compare
    assert not hub._subscriptions.channels["c"].syncing
    subscribe.open()
    assert (await join)["type"] == "joined"
    await hub.publish("c", 2)
    await until(lambda: len(offsets(a)) >= 1)
    assert offsets(a) == [2] and a.link.closed is None
    await hub.stop()


async def test_a_repair_the_broker_cannot_answer_closes_and_the_resume_recovers() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    await until(lambda: offsets(a) == [1])
    epoch = a.link.of_type("message")[0]["epoch"]
    broker.lose = {2}
    broker.fail("history", BrokerTimeout("history read timed out"))
    await hub.publish("c", 2)
    await hub.publish("c", 3)
    await until(lambda: a.link.closed is not None)
    assert a.link.closed == MISSED
    assert offsets(a) == [1]  # 3 was never delivered past the hole at 2
    again = await joined(hub, "a", since={"offset": 1, "epoch": epoch})
    assert again.link.of_type("joined")[0]["recovered"] is True
    assert offsets(again) == [2, 3]
    broker.lose = set()
    await hub.publish("c", 4)
    await until(lambda: len(offsets(again)) >= 3)
    assert offsets(again) == [2, 3, 4] and again.link.closed is None
    await hub.stop()


async def test_a_publication_the_broker_delivers_twice_is_pushed_once() -> None:
    broker, hub = await started()
    a = await joined(hub, "a")
    broker.repeat = {1}
    await hub.publish("c", 1)
    await hub.publish("c", 2)
    await until(lambda: len(offsets(a)) >= 2)
    assert offsets(a) == [1, 2] and a.link.closed is None
    await hub.stop()


async def test_a_publication_confirmed_late_and_lost_on_pub_sub_still_reaches_everyone_once() -> (
    None
):
    broker, hub = await started()
    a = await joined(hub, "a")
    await hub.publish("c", 1)
    p = Peer(hub, "p")
    frame = {"type": "publish", "channel": "c", "data": "two", "idempotency_key": "k", "id": 7}
    broker.lose = {2}
    broker.fail("publish", BrokerTimeout("no reply in time"))  # it ran: offset 2 is taken
    reply = await p.say(frame)
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "timeout", 7)
    reply = await p.say(frame)  # the client retries with the same key: acked, not repeated
    assert (reply["type"], reply["offset"]) == ("ack", 2)
    await hub.publish("c", 3)  # shows this node's hole at 2, filled from history
    await until(lambda: len(offsets(a)) >= 3)
    assert [m["data"] for m in a.link.of_type("message")] == [1, "two", 3]
    assert offsets(a) == [1, 2, 3] and a.link.closed is None
    await hub.stop()


async def test_messages_arriving_while_the_first_join_registers_are_not_taken_for_a_gap() -> None:
    broker, hub = await started(StagedBroker(history_size=2))
    for i in range(1, 6):
        await hub.publish("c", i)  # before anyone here joined: history keeps 4 and 5
    presence = broker.hold("presence_add")
    a = Peer(hub, "a")
    join = asyncio.ensure_future(a.say({"type": "join", "channel": "c"}))
    await presence.wait_reached()  # a's join read the position (5) and registers a's presence
    for i in range(6, 9):
        await hub.publish("c", i)  # reach this node while it knows no position yet
    presence.open()
    await join
    assert a.link.of_type("joined")[0]["offset"] == 5
    await hub.publish("c", 9)  # must follow 8: nothing is missing
    await until(lambda: len(offsets(a)) >= 4 or a.link.closed is not None)
    assert offsets(a) == [6, 7, 8, 9] and a.link.closed is None
    assert "history" not in broker.calls  # no repair was needed
    await hub.stop()
