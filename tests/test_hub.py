"""The hub with in-memory links: no sockets, every reply and event checked as JSON."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from wshub import Forbidden, Hub, Permissions, Settings
from wshub.brokers import BrokerUnavailable
from wshub.brokers.memory import MemoryBroker
from wshub.core.admission import Refused
from wshub.core.connection import Connection
from wshub.model.publication import Publication
from wshub.protocol.wire import SharedFrame
from wshub.transport.handshake import refusal_for


class FakeSocket:
    """Records what a connection writes; ``gate`` cleared means the peer stopped reading."""

    fast = None  # the ASGI path; tests/test_fast_path.py covers the other one

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.dropped: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def drop(self, code: int, reason: str) -> None:
        self.dropped = (code, reason)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.sent if f["type"] == kind]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class Peer:
    def __init__(self, hub: Hub, user: str, **connect: Any) -> None:
        self.hub = hub
        self.link = FakeSocket()
        self.conn: Connection = hub.connect(user, self.link, **connect)

    async def say(self, frame: dict[str, Any] | str) -> dict[str, Any]:
        """Send a frame and return the last frame written after it."""
        before = len(self.link.sent)
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await self.hub.handle_text(self.conn, text)
        await settle()
        assert len(self.link.sent) > before, "no reply"
        return self.link.sent[-1]


@pytest.fixture
async def hub() -> Any:
    h = Hub("memory://", Settings(queue_size=8, max_channels=2))
    await h.start()
    yield h
    await h.stop()


async def test_publish_fans_out_once_encoded(hub: Hub) -> None:
    a, b, c = Peer(hub, "a"), Peer(hub, "b"), Peer(hub, "c")
    for p in (a, b):
        await p.say({"type": "join", "channel": "room"})
    ack = await c.say({"type": "publish", "channel": "room", "data": {"x": 1}, "id": 1})
    epoch = a.link.of_type("message")[0]["epoch"]
    assert ack == {"type": "ack", "id": 1, "channel": "room", "offset": 1, "epoch": epoch}
    assert a.link.of_type("message") == b.link.of_type("message")
    assert a.link.of_type("message")[0]["from"] == "c"
    assert c.link.of_type("message") == []  # not joined: no copy for the publisher


async def test_encoded_once_per_publication(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    peers = [Peer(hub, f"u{i}") for i in range(5)]
    for p in peers:
        await p.say({"type": "join", "channel": "room"})
    frames: list[SharedFrame] = []
    original = vars(Publication)["frame"].fget
    assert original is not None

    def spy(self: Publication) -> SharedFrame:
        first = self._frame is None
        value: SharedFrame = original(self)
        if first:
            frames.append(value)
        return value

    monkeypatch.setattr(Publication, "frame", property(spy))
    await peers[0].say({"type": "publish", "channel": "room", "data": 1})
    assert len(frames) == 1
    assert all(len(p.link.of_type("message")) == 1 for p in peers)


async def test_member_events_and_presence(hub: Hub) -> None:
    a, b = Peer(hub, "a"), Peer(hub, "b")
    b2 = Peer(hub, "b")
    await a.say({"type": "join", "channel": "room", "meta": {"v": 1}})
    await b.say({"type": "join", "channel": "room", "meta": {"v": 2}})
    await b2.say({"type": "join", "channel": "room", "meta": {"v": 3}})
    assert a.link.of_type("member_joined") == [
        {"type": "member_joined", "channel": "room", "user": "b", "meta": {"v": 2}}
    ]
    assert b.link.of_type("member_joined") == [] == b2.link.of_type("member_joined")
    presence = await a.say({"type": "presence", "channel": "room", "id": 9})
    assert presence["members"] == [
        {"user": "a", "meta": {"v": 1}, "connections": 1},
        {"user": "b", "meta": {"v": 3}, "connections": 2},
    ]
    await b.say({"type": "leave", "channel": "room"})
    assert a.link.of_type("member_left") == []
    await hub.detach(b2.conn)
    assert a.link.of_type("member_left") == [
        {"type": "member_left", "channel": "room", "user": "b", "meta": {"v": 3}}
    ]


async def test_direct_reaches_every_connection_of_the_user(hub: Hub) -> None:
    a, b1, b2 = Peer(hub, "a"), Peer(hub, "b"), Peer(hub, "b")
    assert await a.say({"type": "send", "to": "b", "data": "hi", "id": 1}) == {
        "type": "ack",
        "id": 1,
    }
    for p in (b1, b2):
        (direct,) = p.link.of_type("direct")
        assert (direct["from"], direct["data"]) == ("a", "hi")
    assert await a.say({"type": "send", "to": "nobody", "data": 1, "id": 2}) == {
        "type": "ack",
        "id": 2,
    }


async def test_errors_not_joined_limit_too_large(hub: Hub) -> None:
    a = Peer(hub, "a")
    assert (await a.say({"type": "leave", "channel": "x", "id": 1}))["code"] == "not_joined"
    await a.say({"type": "join", "channel": "one"})
    await a.say({"type": "join", "channel": "two"})
    again = await a.say({"type": "join", "channel": "two", "id": 2})
    assert again["type"] == "joined"  # a repeated join counts once
    assert (await a.say({"type": "join", "channel": "three", "id": 3}))["code"] == "limit"
    big = json.dumps({"type": "publish", "channel": "one", "data": "x" * 70_000})
    assert (await a.say(big))["code"] == "too_large"
    wide = json.dumps({"type": "publish", "channel": "one", "data": "é" * 40_000})
    assert (await a.say(wide))["code"] == "too_large"  # 40k characters, 80k bytes
    assert (await a.say({"type": "ping", "id": 4})) == {"type": "pong", "id": 4}


async def test_slow_consumer_is_dropped_and_leaves_presence(hub: Hub) -> None:
    fast, slow, watcher = Peer(hub, "fast"), Peer(hub, "slow"), Peer(hub, "watcher")
    for p in (fast, slow, watcher):
        await p.say({"type": "join", "channel": "room"})
    slow.link.gate.clear()  # stops reading
    for i in range(30):
        await hub.publish("room", i)
        await settle()
    assert slow.link.dropped == (4008, "slow consumer")
    assert slow.conn.closed
    assert [m["data"] for m in fast.link.of_type("message")] == list(range(30))
    left = watcher.link.of_type("member_left")
    assert [e["user"] for e in left] == ["slow"]
    presence = await watcher.say({"type": "presence", "channel": "room", "id": 1})
    assert {m["user"] for m in presence["members"]} == {"fast", "watcher"}


async def test_authorize_hook_forbids() -> None:
    async def authorize(user: str, action: str, channel: str) -> bool:
        return channel.startswith(f"{user}:") or (action == "join" and channel == "public")

    hub = Hub(authorize=authorize)
    await hub.start()
    a = Peer(hub, "a")
    assert (await a.say({"type": "join", "channel": "a:x", "id": 1}))["type"] == "joined"
    assert (await a.say({"type": "join", "channel": "public", "id": 2}))["type"] == "joined"
    for frame in (
        {"type": "join", "channel": "b:x", "id": 3},
        {"type": "publish", "channel": "public", "data": 1, "id": 3},
        {"type": "presence", "channel": "b:x", "id": 3},
        {"type": "history", "channel": "b:x", "id": 3},
    ):
        reply = await a.say(frame)
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "forbidden", 3)
    await hub.stop()


class DownBroker(MemoryBroker):
    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        raise BrokerUnavailable("down")

    async def send(self, user: str, frame: str) -> None:
        raise BrokerUnavailable("down")

    async def presence(self, channel: str) -> Any:
        raise RuntimeError("bug")


async def test_unavailable_and_internal_errors_keep_the_connection() -> None:
    hub = Hub(DownBroker())
    await hub.start()
    a = Peer(hub, "a")
    reply = await a.say({"type": "publish", "channel": "c", "data": 1, "id": 1})
    assert (reply["code"], reply["id"]) == ("unavailable", 1)
    assert (await a.say({"type": "send", "to": "b", "data": 1, "id": 2}))["code"] == "unavailable"
    assert (await a.say({"type": "presence", "channel": "c", "id": 3}))["code"] == "internal"
    assert (await a.say({"type": "ping", "id": 4}))["type"] == "pong"
    await hub.stop()


async def test_rate_limit_rejects_then_closes_abusers() -> None:
    hub = Hub(settings=Settings(rate_limit=2))
    await hub.start()
    clock = [1000.0]
    hub.clock = lambda: clock[0]
    paused: list[float] = []

    async def sleep(seconds: float) -> None:
        paused.append(seconds)
        clock[0] += seconds

    hub.sleep = sleep
    a = Peer(hub, "a")
    replies = [await a.say({"type": "ping"}) for _ in range(3)]
    assert [r["type"] for r in replies] == ["pong", "pong", "error"]
    assert replies[2]["code"] == "rate_limited"
    assert paused == [0.25]  # the reader was held back for half a token's time
    # Within the same second, more rejections are silent: one error per interval, no more.
    sent = len(a.link.sent)
    hub.handle_binary(a.conn)
    await hub.handle_text(a.conn, '{"type":"ping"}')
    await settle()
    assert len(a.link.sent) == sent
    # A backlog of frames: each rejection holds the reader back for a quarter second (the
    # clock moves with it), and after over ten seconds of nothing but rejections: 1008.
    for _ in range(60):
        await hub.handle_text(a.conn, '{"type":"ping"}')
    await settle()
    errors = [f for f in a.link.sent[sent:] if f.get("code") == "rate_limited"]
    assert 8 <= len(errors) <= 14  # about one a second, not one per frame
    assert a.link.closed == (1008, "rate limit exceeded repeatedly")
    await hub.stop()


async def test_pending_join_buffers_live_deliveries() -> None:
    """A publication that arrives while a join is between subscribe and its reply is kept."""

    class SlowRecover(MemoryBroker):
        gate = asyncio.Event()

        async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Any:
            rec = await super().recover(channel, offset, epoch)
            await self.gate.wait()
            return rec

    broker = SlowRecover()
    hub = Hub(broker)
    await hub.start()
    a = Peer(hub, "a")
    join = asyncio.ensure_future(hub.handle_text(a.conn, '{"type":"join","channel":"c"}'))
    await settle()
    await hub.publish("c", "during")  # offset 1: after the position recover() read (0)
    broker.gate.set()
    await join
    await settle()
    assert [f["type"] for f in a.link.sent] == ["joined", "message"]
    assert a.link.sent[1]["offset"] == 1
    await hub.publish("c", "after")
    await settle()
    assert [m["offset"] for m in a.link.of_type("message")] == [1, 2]
    await hub.stop()


async def test_a_join_that_holds_back_more_than_its_queue_is_a_slow_consumer() -> None:
    """Deliveries held aside for a join in progress are bounded by the queue size: a join
    that takes longer than that drops its connection (4008) and keeps nothing."""

    class SlowRecover(MemoryBroker):
        gate = asyncio.Event()

        async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Any:
            rec = await super().recover(channel, offset, epoch)
            await self.gate.wait()
            return rec

    broker = SlowRecover()
    hub = Hub(broker, Settings(queue_size=8))
    await hub.start()
    a = Peer(hub, "a")
    join = asyncio.ensure_future(hub.handle_text(a.conn, '{"type":"join","channel":"c"}'))
    await settle()
    for n in range(8):
        await hub.publish("c", n)
    assert not a.conn.closed  # eight held aside: as many as its queue holds
    await hub.publish("c", 8)
    assert a.link.dropped == (4008, "slow consumer")
    assert hub._subscriptions.channels["c"].pending == {}
    broker.gate.set()
    await join  # completes without error, and delivers nothing to the dropped connection
    assert a.link.sent == []
    await hub.detach(a.conn)
    assert "c" not in hub._subscriptions.channels
    await hub.stop()


async def test_admission_is_counted_per_node_and_user() -> None:
    hub = Hub(settings=Settings(max_connections=3, max_connections_per_user=2))
    assert hub.admit("a") is None
    assert hub.admit("a") is None
    refused = hub.admit("a")
    assert refused is Refused.USER_FULL
    refusal = refusal_for(refused, hub.settings.retry_after)
    assert (refusal.status, refusal.retry_after) == (503, 1)
    assert hub.admit("b") is None
    assert hub.admit("c") is Refused.NODE_FULL
    assert "node" in Refused.NODE_FULL.reason
    hub.release("a")
    assert hub.admit("c") is None
    assert hub.connection_count == 3


async def test_library_publish_and_send() -> None:
    hub = Hub()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "orders:1"})
    assert await hub.publish("orders:1", {"status": "shipped"}) == 1
    await hub.send("a", {"note": 1})
    await settle()
    (message,) = a.link.of_type("message")
    assert (message["from"], message["data"]) == (None, {"status": "shipped"})
    (direct,) = a.link.of_type("direct")
    assert (direct["from"], direct["data"]) == (None, {"note": 1})
    with pytest.raises(ValueError, match="channel"):
        await hub.publish("bad channel", 1)
    await hub.stop()


async def test_channels_and_kick_through_the_broker_ops(hub: Hub) -> None:
    a, b, b2 = Peer(hub, "a"), Peer(hub, "b"), Peer(hub, "b")
    for p in (a, b, b2):
        await p.say({"type": "join", "channel": "room"})
    await a.say({"type": "join", "channel": "other"})
    assert await hub.ops.channels() == {"room": 3, "other": 1}
    await hub.ops.kick("b")
    await settle()
    assert b.link.closed == (1008, "disconnected by the server")
    assert b2.link.closed == (1008, "disconnected by the server")
    assert a.link.closed is None


class LossyBroker(MemoryBroker):
    """Pub/sub that loses the publications whose offsets are in ``lose``, as Redis may."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lose: set[int] = set()

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        sink, self._sink = self._sink, None
        try:
            pub = await super().publish(channel, data, sender, idempotency_key)
        finally:
            self._sink = sink
        if pub.offset not in self.lose and sink is not None and channel in self._subscribed:
            sink.deliver(pub)
        return pub


async def test_a_gap_in_the_stream_is_filled_from_history() -> None:
    broker = LossyBroker()
    hub = Hub(broker)
    await hub.start()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c"})
    broker.lose = {2, 3}
    for i in range(5):
        await hub.publish("c", i)
    await settle()
    assert [m["offset"] for m in a.link.of_type("message")] == [1, 2, 3, 4, 5]
    assert a.link.closed is None
    await hub.stop()


async def test_a_gap_beyond_history_closes_the_subscribers_with_1011() -> None:
    broker = LossyBroker(history_size=2)
    hub = Hub(broker)
    await hub.start()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c"})
    broker.lose = {2, 3, 4}
    for i in range(5):
        await hub.publish("c", i)
    await settle()
    assert [m["offset"] for m in a.link.of_type("message")] == [1]
    assert a.link.closed == (1011, "missed messages: rejoin")
    await hub.stop()


async def test_resync_after_a_broker_outage_delivers_what_was_missed() -> None:
    broker = LossyBroker()
    hub = Hub(broker)
    await hub.start()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c"})
    await hub.publish("c", "before")
    broker.lose = {2, 3}
    await hub.publish("c", "lost-1")
    await hub.publish("c", "lost-2")  # nothing after it reveals the gap ...
    await settle()
    assert len(a.link.of_type("message")) == 1
    hub.resync()  # ... until the broker says it reconnected
    await settle()
    assert [m["data"] for m in a.link.of_type("message")] == ["before", "lost-1", "lost-2"]
    await hub.stop()


async def test_a_new_epoch_restarts_offsets_without_a_gap() -> None:
    hub = Hub()
    await hub.start()
    a = Peer(hub, "a")
    await a.say({"type": "join", "channel": "c"})
    await hub.publish("c", 1)
    assert isinstance(hub.broker, MemoryBroker)
    hub.broker._logs.clear()  # the broker lost the channel's history: a new epoch
    await hub.publish("c", 2)
    await settle()
    first, second = a.link.of_type("message")
    assert (first["offset"], second["offset"]) == (1, 1)
    assert first["epoch"] != second["epoch"]
    await hub.stop()


# --- permissions, expiry and hooks ------------------------------------------------------------


async def test_connection_permissions_and_authorize_must_both_agree() -> None:
    async def authorize(user: str, action: str, channel: str) -> bool:
        return channel != "chat:closed"

    hub = Hub("memory://", authorize=authorize)
    await hub.start()
    try:
        peer = Peer(hub, "ann", permissions=Permissions("ann", join=["chat:*"]))
        assert (await peer.say({"type": "join", "channel": "chat:a"}))["type"] == "joined"
        assert (await peer.say({"type": "join", "channel": "chat:closed"}))["code"] == "forbidden"
        assert (await peer.say({"type": "join", "channel": "news:a"}))["code"] == "forbidden"
        assert (await peer.say({"type": "join", "channel": "user:ann"}))["type"] == "joined"
    finally:
        await hub.stop()


async def test_expiry_closes_with_4001_and_later_frames_are_not_served(hub: Hub) -> None:
    link = FakeSocket()
    conn = hub.connect("ann", link, expires=time.time() + 0.05)
    deadline = time.monotonic() + 5
    while link.closed is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert link.closed == (4001, "token expired")
    written = len(link.sent)
    await hub.handle_text(conn, '{"type":"publish","channel":"room","data":1,"id":"p"}')
    await settle()
    assert len(link.sent) == written  # not served: no ack, no error
    assert (await hub.broker.history("room", None, None, 10))[1] == []  # nothing published
    await hub.detach(conn)


async def test_expiry_timer_is_cancelled_on_disconnect(hub: Hub) -> None:
    link, witness = FakeSocket(), FakeSocket()
    expires = time.time() + 0.1
    conn = hub.connect("ann", link, expires=expires)
    other = hub.connect("bob", witness, expires=expires)  # its timer fires: so would ann's
    await hub.detach(conn)
    deadline = time.monotonic() + 5
    while witness.closed is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await settle()
    assert link.closed is None
    await hub.detach(other)


async def test_on_publish_errors_become_error_codes(caplog: pytest.LogCaptureFixture) -> None:
    async def on_publish(user: str, channel: str, data: Any) -> Any:
        if data == "refuse":
            raise Forbidden()
        if data == "bug":
            raise RuntimeError("a bug in the hook")
        return {"wrapped": data}

    hub = Hub("memory://", on_publish=on_publish)
    await hub.start()
    try:
        a = Peer(hub, "a")
        await a.say({"type": "join", "channel": "room"})
        ack = await a.say({"type": "publish", "channel": "room", "data": 7, "id": 1})
        assert ack["type"] == "ack"
        assert a.link.of_type("message")[-1]["data"] == {"wrapped": 7}
        refused = await a.say({"type": "publish", "channel": "room", "data": "refuse", "id": 2})
        assert refused == {
            "type": "error",
            "code": "forbidden",
            "message": "refused by the server: forbidden",
            "id": 2,
        }
        with caplog.at_level("ERROR"):
            bug = await a.say({"type": "publish", "channel": "room", "data": "bug", "id": 3})
        assert (bug["code"], bug["id"]) == ("internal", 3)
        assert "a bug in the hook" in caplog.text
        huge = await a.say('{"type":"publish","channel":"room","data":1e400,"id":4}')
        assert (huge["code"], huge["id"]) == ("bad_request", 4)
        assert len(a.link.of_type("message")) == 1
    finally:
        await hub.stop()


async def test_connect_hooks_run_once_and_their_failures_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str, str]] = []

    async def on_connect(user: str, session: str) -> None:
        seen.append(("connect", user, session))
        raise RuntimeError("hook failed")

    async def on_disconnect(user: str, session: str) -> None:
        seen.append(("disconnect", user, session))

    hub = Hub("memory://", on_connect=on_connect, on_disconnect=on_disconnect)
    await hub.start()
    try:
        link = FakeSocket()
        conn = hub.connect("ann", link)
        with caplog.at_level("ERROR"):
            await hub.greet(conn)
        await settle()
        assert link.sent[0]["type"] == "welcome"
        assert "on_connect hook failed" in caplog.text
        await hub.detach(conn)
        await hub.detach(conn)
        assert seen == [("connect", "ann", conn.session), ("disconnect", "ann", conn.session)]
    finally:
        await hub.stop()


async def test_authorize_may_refuse_with_its_own_message() -> None:
    async def authorize(user: str, action: str, channel: str) -> bool:
        if channel == "vip":
            raise Forbidden("members only")
        return True

    hub = Hub("memory://", authorize=authorize)
    await hub.start()
    try:
        reply = await Peer(hub, "a").say({"type": "join", "channel": "vip", "id": 9})
        assert reply == {"type": "error", "code": "forbidden", "message": "members only", "id": 9}
    finally:
        await hub.stop()
