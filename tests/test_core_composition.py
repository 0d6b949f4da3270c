"""The hub's core composed by hand, with nothing of the app (its defaults count nothing and
write through ASGI), and what ``wshub.Hub`` composes: one node id, the writer for the link."""

from __future__ import annotations

import json

from tests.test_hub import FakeSocket, settle
from wshub import Hub, Settings
from wshub.brokers.memory import MemoryBroker
from wshub.brokers.redis import RedisBroker
from wshub.core.admission import Refused
from wshub.core.connection import AsgiConnection
from wshub.core.hub import HubCore
from wshub.core.metrics import NoMetrics
from wshub.core.null_socket import CountingPath, NullSocket
from wshub.transport.direct import DirectConnection, Writers
from wshub.transport.handshake import refusal_for


async def test_a_core_with_its_defaults_serves_joins_and_publications() -> None:
    core = HubCore(MemoryBroker(), Settings(max_connections=1))
    assert isinstance(core.metrics, NoMetrics)
    await core.start()
    try:
        assert core.admit("ann") is None
        assert core.admit("bob") is Refused.NODE_FULL
        link = FakeSocket()
        conn = core.connect("ann", link)
        assert isinstance(conn, AsgiConnection)
        await core.greet(conn)
        await core.handle_text(conn, json.dumps({"type": "join", "channel": "room", "id": 1}))
        await core.handle_text(conn, json.dumps({"type": "publish", "channel": "room", "data": 7}))
        await core.handle_text(conn, json.dumps({"type": "leave", "channel": "nowhere"}))
        await settle()
        kinds = [f["type"] for f in link.sent]
        assert kinds == ["welcome", "joined", "message", "ack", "error"]
        assert link.sent[0]["server"]["node"] == core.node
        assert core.channel_counts() == {"room": 1}
        await core.detach(conn)
        core.release("ann")
        assert core.channel_counts() == {} and core.connection_count == 0
    finally:
        await core.stop()


def test_a_refusal_reason_is_a_503_with_retry_after() -> None:
    for refused in Refused:
        refusal = refusal_for(refused, 7)
        assert (refusal.status, refusal.reason, refusal.retry_after) == (503, refused.reason, 7)


async def test_the_hub_and_its_redis_broker_name_the_node_alike() -> None:
    # Neither connects until started: the ids are given when they are built.
    by_url = Hub("redis://127.0.0.1:1/0")
    assert isinstance(by_url.broker, RedisBroker)
    assert by_url.broker.node == by_url.node
    broker = RedisBroker("redis://127.0.0.1:1/0", Settings())
    assert Hub(broker).node == broker.node


async def test_writers_take_the_fast_path_where_the_link_offers_it_and_it_is_on() -> None:
    def overflow(_: object) -> None:
        raise AssertionError("no overflow expected")

    on, off = Writers(enabled=True), Writers(enabled=False)
    fast = on("s1", "ann", NullSocket(CountingPath()), 8, overflow)
    assert isinstance(fast, DirectConnection)
    assert isinstance(on("s2", "ann", FakeSocket(), 8, overflow), AsgiConnection)
    assert isinstance(off("s3", "ann", NullSocket(CountingPath()), 8, overflow), AsgiConnection)
    path = CountingPath()
    conn = on("s4", "ann", NullSocket(path), 8, overflow)
    conn.start()
    conn.push("hello")
    await settle()
    assert path.last.endswith(b"hello")
    await conn.stop()
