"""The hub's parts seen through a core composed by hand: its life (a stop before any start, a
second start, a drain whose peer stops reading), its background work, its default metrics
sink, and the small protocol, broker and token helpers around it."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.test_hub import FakeSocket, settle
from wshub import Settings
from wshub.brokers import create_broker
from wshub.brokers.memory import MemoryBroker
from wshub.core.auth import MIN_RSA_BITS, TokenVerifier
from wshub.core.connection import Connection
from wshub.core.hub import HubCore
from wshub.core.metrics import NoMetrics
from wshub.core.tokens import Claims, Signer
from wshub.protocol import CloseCode
from wshub.protocol.asyncapi import document, served_host


class _CutOffSocket(FakeSocket):
    """A link whose transport, told to drop the peer, ends the connection as a socket would:
    the core hears of it through :meth:`HubCore.detach`."""

    def __init__(self, core: HubCore) -> None:
        super().__init__()
        self.core = core
        self.conn: Connection | None = None
        self.cut = asyncio.Event()

    def drop(self, code: int, reason: str) -> None:
        super().drop(code, reason)
        assert self.conn is not None
        self.cut.set()
        self.core.spawn(self.core.detach(self.conn, code))


async def test_a_stop_before_any_start_leaves_the_broker_untouched_and_start_is_idempotent() -> (
    None
):
    broker = MemoryBroker()
    core = HubCore(broker)
    await core.stop()  # nothing started: nothing to close
    assert not core.serving
    await core.start()
    await core.start()  # a second start (a lifespan and a test both starting) is a no-op
    assert core.serving
    await core.stop()
    assert not core.serving
    # Stopped for good: a stopped core can be started again on the same broker.
    await core.start()
    assert core.serving
    await core.stop()


async def test_a_drain_cuts_off_a_peer_that_stopped_reading_within_the_close_timeout() -> None:
    close_timeout = 0.3
    core = HubCore(MemoryBroker(), Settings(close_timeout=close_timeout))
    await core.start()
    try:
        reader, stuck = FakeSocket(), _CutOffSocket(core)
        good = core.connect("ann", reader)
        bad = core.connect("bob", stuck)
        stuck.conn = bad
        await core.greet(good)
        await core.greet(bad)
        await settle()
        stuck.gate.clear()  # bob's peer stops reading: his writer waits in send
        bad.push(json.dumps({"type": "pong"}))
        await settle()

        loop = asyncio.get_running_loop()
        began = loop.time()
        drain = asyncio.ensure_future(core.drain(0))
        await settle()
        assert core.draining and not core.accepting
        # The reading peer gets its close with 1001; its transport would end the socket.
        assert reader.closed == (CloseCode.GOING_AWAY, "server draining: reconnect")
        await core.detach(good)
        # The one that stopped reading never lets the close through: cut off.
        await asyncio.wait_for(stuck.cut.wait(), close_timeout + 2)
        cut_after = loop.time() - began
        assert stuck.dropped == (CloseCode.GOING_AWAY, "server draining")
        assert stuck.closed is None
        assert close_timeout <= cut_after < close_timeout + 1
        await asyncio.wait_for(drain, 2)
        assert core.connection_count == 0
    finally:
        await core.stop()


async def test_a_drain_gives_up_on_a_peer_whose_transport_never_ends_it() -> None:
    """Even a transport that never reports the end cannot hold a drain past its bounds."""
    close_timeout = 0.1
    core = HubCore(MemoryBroker(), Settings(close_timeout=close_timeout))
    await core.start()
    try:
        link = FakeSocket()  # records the drop, never ends the connection
        conn = core.connect("ann", link)
        await core.greet(conn)
        await settle()
        link.gate.clear()
        conn.push(json.dumps({"type": "pong"}))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(core.drain(0), 2 * close_timeout + 2)
        took = loop.time() - began
        assert link.dropped == (CloseCode.GOING_AWAY, "server draining")
        assert 2 * close_timeout + 1 <= took < 2 * close_timeout + 2
        assert conn.closed  # given up on, and no longer written to
    finally:
        await core.stop()


async def test_stop_cancels_the_background_work_still_running() -> None:
    core = HubCore(MemoryBroker())
    await core.start()
    began, cancelled = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        began.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    core.spawn(forever())
    await asyncio.wait_for(began.wait(), 2)
    await core.stop()
    await asyncio.wait_for(cancelled.wait(), 2)


async def test_a_failing_background_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    core = HubCore(MemoryBroker())
    await core.start()
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise RuntimeError("repair went wrong")

    try:
        with caplog.at_level(logging.ERROR, logger="wshub.core.hub"):
            core.spawn(broken())
            await asyncio.wait_for(failed.wait(), 2)
            await settle()
        [record] = [r for r in caplog.records if r.message == "background task failed"]
        assert record.exc_info is not None and "repair went wrong" in str(record.exc_info[1])
    finally:
        await core.stop()


async def test_a_core_without_metrics_serves_joins_direct_messages_errors_and_slow_consumers() -> (
    None
):
    core = HubCore(MemoryBroker(), Settings(queue_size=2))
    assert isinstance(core.metrics, NoMetrics)
    await core.start()
    try:
        link = FakeSocket()
        conn = core.connect("ann", link)
        await core.greet(conn)
        await core.watch_direct(conn)
        await core.handle_text(conn, json.dumps({"type": "join", "channel": "room", "id": 1}))
        await core.publish("room", "first")
        await core.send("ann", {"hi": 1}, sender="server")
        await core.handle_text(conn, "not json")
        await settle()
        kinds = [f["type"] for f in link.sent]
        assert kinds == ["welcome", "joined", "message", "direct", "error"]
        # The peer stops reading and publications pile up: dropped with 4008.
        link.gate.clear()
        for i in range(50):
            await core.publish("room", i)
            if link.dropped:
                break
        assert link.dropped == (CloseCode.SLOW_CONSUMER, "slow consumer")
    finally:
        await core.stop()


def test_an_unknown_broker_url_names_the_schemes_it_takes() -> None:
    with pytest.raises(ValueError, match=r"memory, redis, rediss, unix"):
        create_broker("kafka://127.0.0.1:9092", Settings())


def test_the_asyncapi_document_names_the_socket_a_request_arrived_on() -> None:
    assert served_host(None) == "127.0.0.1:8000"  # no server in the scope (a test client)
    assert served_host(("::1", 8000)) == "[::1]:8000"
    assert served_host(["/run/wshub.sock", None]) == "/run/wshub.sock"
    host = served_host(("::1", 9000))
    assert document(host)["servers"]["wshub"]["host"] == "[::1]:9000"


def test_the_signer_refuses_a_negative_lifetime_and_a_short_rsa_key() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Claims("ann", ttl=-1).payload()
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = short.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The server would refuse the matching public key: the signer refuses the private one.
    with pytest.raises(ValueError, match=f"at least {MIN_RSA_BITS} bits"):
        Signer.from_private_key(pem)
    with pytest.raises(ValueError, match=f"at least {MIN_RSA_BITS} bits"):
        TokenVerifier.from_public_key(
            short.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


async def test_server_joins_and_leaves_of_an_open_connection_are_sent_once() -> None:
    core = HubCore(MemoryBroker())
    await core.start()
    try:
        link = FakeSocket()
        conn = core.connect("ann", link)  # open mode: no token, no credentials
        await core.greet(conn)
        await core.watch_direct(conn)
        for _ in range(2):  # the second finds ann in the room already: nothing is sent
            await core.subscribe("ann", "room")
            await settle()
        assert [f["channel"] for f in link.of_type("subscribed")] == ["room"]
        for _ in range(2):  # the second finds ann out of it: nothing is sent
            await core.unsubscribe("ann", "room")
            await settle()
        assert link.of_type("unsubscribed") == [
            {"type": "unsubscribed", "channel": "room", "reason": "server"}
        ]
        assert core.channel_counts() == {}
    finally:
        await core.stop()
