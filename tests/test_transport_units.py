"""DirectConnection, Flusher and wshub's own WebSocket transport, against a fake socket.

The real transport class, the real hub and app, the real websockets sans-I/O parser on both
sides; only the socket is replaced (tests/transport_support.py), so that a test can stop the
peer's reading, break a transport, or look at every byte written after a close frame.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from websockets.frames import Opcode

from tests.transport_support import LOW_WATER, FakeTransport, Session
from wshub import Hub, Settings
from wshub.core.connection import AsgiConnection, Connection
from wshub.protocol.wire import SharedFrame
from wshub.transport.direct import FLUSH_BYTES, DirectConnection


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub("memory://", Settings(close_timeout=0.2, queue_bytes=200_000))
    await h.start()
    yield h
    await h.stop()


async def until(condition: object, timeout: float = 3.0) -> None:
    """Wait, in small steps, for ``condition()`` to hold; fail after ``timeout``."""
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def opened(hub: Hub, user: str = "ann") -> tuple[Session, Connection]:
    session = Session(hub, f"/ws?user={user}")
    conn = await session.open()
    assert isinstance(conn, DirectConnection)
    await until(lambda: any(f.opcode is Opcode.TEXT for f in session.received()))
    return session, conn


def texts(session: Session) -> list[str]:
    return [bytes(f.data).decode() for f in session.received() if f.opcode is Opcode.TEXT]


# --- closes are closes ---------------------------------------------------------------------


async def test_no_data_frame_follows_a_peer_initiated_close(hub: Hub) -> None:
    session, conn = await opened(hub)
    transport = session.transport
    transport.reading = False
    conn.push("x" * 70_000)  # fills the transport past its high-water mark
    await until(lambda: transport.paused)
    session.client.send_close(1000)
    session.send_client()  # the transport writes the close reply itself
    for i in range(5):  # the hub fans out until it learns of the close
        conn.push_frame(SharedFrame(json.dumps({"n": i})))
    session.protocol.resume_writing()  # a drain flushes what is queued
    await asyncio.sleep(0)
    transport.drain()
    assert session.after_close() == []


async def test_no_data_frame_follows_the_shutdown_close(hub: Hub) -> None:
    session, conn = await opened(hub)
    transport = session.transport
    transport.reading = False
    conn.push("x" * 70_000)
    await until(lambda: transport.paused)
    session.protocol.shutdown()  # uvicorn's shutdown: the transport writes 1012
    conn.push_frame(SharedFrame('{"late":1}'))
    session.protocol.resume_writing()
    transport.drain()
    assert session.after_close() == []


async def test_drop_cuts_off_a_peer_whose_close_was_handed_over(hub: Hub) -> None:
    session, conn = await opened(hub)
    transport = session.transport
    transport.reading = False
    conn.push("x" * 70_000)
    await until(lambda: transport.paused)
    await asyncio.sleep(0)  # the queue is written: empty, and the transport full
    assert conn.queued == 0
    conn.close(1001, "going away")  # written past the full buffer, the peer not reading it
    await asyncio.sleep(0.05)
    assert conn.closed and not transport.aborted.is_set()
    conn.drop(1001, "draining")
    await asyncio.wait_for(transport.aborted.wait(), 2)  # after the close timeout (0.2 s)


async def test_a_peer_that_closes_and_stops_reading_is_cut_off(hub: Hub) -> None:
    session, conn = await opened(hub)
    transport = session.transport
    transport.reading = False
    session.protocol.close_timeout = 0.2
    conn.push("x" * 70_000)
    await until(lambda: transport.paused)
    session.client.send_close(1000)
    session.send_client()
    await asyncio.wait_for(transport.aborted.wait(), 2)


# --- one failing connection never affects the others ---------------------------------------


async def test_a_failing_transport_does_not_stop_the_flush_of_the_others(hub: Hub) -> None:
    sessions = [await opened(hub, f"u{i}") for i in range(3)]
    for session, _ in sessions:
        session.client.send_text(b'{"type":"join","channel":"room"}')
        session.send_client()
    await until(lambda: all('"joined"' in "".join(texts(s)) for s, _ in sessions))
    sessions[0][0].transport.fail = RuntimeError("broken transport")
    await hub.publish("room", {"n": 1})  # small: written by the Flusher at the end of the tick
    await until(lambda: all('"n":1' in "".join(texts(s)) for s, _ in sessions[1:]))
    assert sessions[0][1].closed


async def test_a_failing_transport_does_not_stop_a_fan_out(hub: Hub) -> None:
    sessions = [await opened(hub, f"u{i}") for i in range(3)]
    for session, _ in sessions:
        session.client.send_text(b'{"type":"join","channel":"room"}')
        session.send_client()
    await until(lambda: all('"joined"' in "".join(texts(s)) for s, _ in sessions))
    sessions[1][0].transport.fail = RuntimeError("broken transport")
    big = "y" * 70_000  # past FLUSH_BYTES: written inside the fan-out loop itself
    await hub.publish("room", big)
    await until(lambda: big in "".join(texts(sessions[2][0])))
    assert big in "".join(texts(sessions[0][0]))
    assert sessions[1][1].closed


# --- the byte budget -----------------------------------------------------------------------


async def test_the_fast_path_never_hands_the_transport_more_than_a_chunk_past_its_mark(
    hub: Hub,
) -> None:
    session, conn = await opened(hub)
    transport = session.transport
    transport.reading = False
    frame = SharedFrame(json.dumps({"d": "z" * 10_000}))
    for _ in range(19):  # 190 KB: under the budget of 200 KB
        conn.push_frame(frame)
    await asyncio.sleep(0)
    assert not conn.closed
    peak = len(transport.buffer)
    while conn.queued:  # the reader reads a little at a time
        transport.read(20_000)
        peak = max(peak, len(transport.buffer))
    assert peak <= LOW_WATER + FLUSH_BYTES + len(frame.wire)  # one chunk at a time
    transport.reading = True
    transport.drain()
    assert texts(session).count(frame.text) == 19


async def test_replies_count_against_the_byte_budget(hub: Hub) -> None:
    session, conn = await opened(hub)
    await hub.publish("big", "h" * 60_000)
    session.transport.reading = False
    for _ in range(6):  # 60 KB each: the fourth is past the budget of 200 KB
        session.client.send_text(json.dumps({"type": "history", "channel": "big"}).encode())
        session.send_client()
        await asyncio.sleep(0.01)
    await until(lambda: conn.close_code == 4008)


async def test_a_frame_larger_than_the_budget_still_reaches_a_reader_that_keeps_up(
    hub: Hub,
) -> None:
    session, conn = await opened(hub)
    conn.push(json.dumps({"huge": "h" * 300_000}))
    await until(lambda: any("huge" in t for t in texts(session)))
    assert not conn.closed


class InstantSocket:
    """An ASGI server's send that never waits: the peer reads everything at once."""

    fast = None

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.blocked = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        if text == "block":
            await self.blocked.wait()  # a peer that stopped reading

    async def close(self, code: int, reason: str) -> None: ...

    def drop(self, code: int, reason: str) -> None: ...


def asgi_connection(link: InstantSocket, dropped: list[Connection]) -> AsgiConnection:
    conn = AsgiConnection("s", "ann", link, 100, dropped.append, queue_bytes=10_000)
    conn.start()
    return conn


async def test_the_asgi_paths_own_backlog_is_not_a_slow_consumer() -> None:
    link, dropped = InstantSocket(), list[Connection]()
    conn = asgi_connection(link, dropped)
    for i in range(300):  # one busy tick: the writer has had no CPU yet
        conn.push(f"m{i}")
    await until(lambda: len(link.sent) == 300)
    assert dropped == [] and not conn.closed
    await conn.stop()


async def test_the_asgi_path_cuts_off_a_reader_that_blocks_its_writer() -> None:
    link, dropped = InstantSocket(), list[Connection]()
    conn = asgi_connection(link, dropped)
    conn.push("block")
    await until(lambda: link.sent == ["block"])
    for i in range(101):
        conn.push(f"m{i}")
    assert dropped == [conn] and conn.close_code == 4008
    await conn.stop()


# --- pings ---------------------------------------------------------------------------------


async def test_pings_take_tokens_from_the_rate_limit_and_a_flood_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("wshub.core.ratelimit.ABUSE_SECONDS", 0.3)
    hub = Hub("memory://", Settings(rate_limit=5))
    await hub.start()
    try:
        session, conn = await opened(hub)
        for _ in range(50):
            session.client.send_ping(b"p")
        session.send_client()
        pongs = [f for f in session.received() if f.opcode is Opcode.PONG]
        assert 1 <= len(pongs) <= 5  # the burst of one second's worth
        for _ in range(100):  # keep flooding: closed with 1008 once it lasts
            session.client.send_ping(b"p")
            session.send_client()
            if conn.close_code is not None:
                break
            await asyncio.sleep(0.02)
        assert conn.close_code == 1008
    finally:
        await hub.stop()


async def test_a_ping_over_the_rate_holds_the_reading_of_its_peer_for_a_while() -> None:
    # Refusing the pong is not enough: parsing a flood of pings is what costs the node.
    hub = Hub("memory://", Settings(rate_limit=5))
    await hub.start()
    try:
        session, _ = await opened(hub)
        transport: FakeTransport = session.transport
        for _ in range(5):  # within the burst: answered, reading goes on
            session.client.send_ping(b"p")
        session.send_client()
        assert not transport.reading_paused
        session.client.send_ping(b"p")  # over the rate
        session.send_client()
        assert transport.reading_paused
        for _ in range(200):  # then reading resumes by itself, within the hold
            if not transport.reading_paused:
                break
            await asyncio.sleep(0.01)
        assert not transport.reading_paused
    finally:
        await hub.stop()


async def test_a_client_that_pings_and_never_reads_stops_being_read(hub: Hub) -> None:
    session, _ = await opened(hub)
    transport: FakeTransport = session.transport
    transport.reading = False
    for _ in range(20):
        for _ in range(1000):
            session.client.send_ping(b"x" * 10)
        session.send_client()
        if transport.reading_paused:
            break
    assert transport.reading_paused
    assert len(transport.buffer) < 65_536 + 20_000
    transport.reading = True
    transport.drain()
    assert not transport.reading_paused
