"""A connection's edges on its own: closes before it ever started, a drop repeated, a token
expiry set while closing, and a connection that starts waiting for ``auth`` during a drain."""

from __future__ import annotations

import time

from tests.test_hub import FakeSocket
from wshub.core.awaiting_auth import AwaitingAuth
from wshub.core.connection import AsgiConnection, Connection
from wshub.protocol import CloseCode


class CountingSocket(FakeSocket):
    def __init__(self) -> None:
        super().__init__()
        self.drops: list[tuple[int, str]] = []

    def drop(self, code: int, reason: str) -> None:
        super().drop(code, reason)
        self.drops.append((code, reason))


def _conn(socket: FakeSocket) -> AsgiConnection:
    overflowed: list[Connection] = []
    return AsgiConnection("s1", "ann", socket, 8, overflowed.append)


async def test_a_connection_closed_before_it_started_is_cut_off_with_its_code() -> None:
    socket = CountingSocket()
    conn = _conn(socket)
    conn.push('{"type":"pong"}')  # queued, but no writer will ever flush it
    conn.close(CloseCode.GOING_AWAY, "server draining: reconnect")
    assert conn.closed
    assert socket.drops == [(CloseCode.GOING_AWAY, "server draining: reconnect")]
    assert socket.sent == []


async def test_a_second_drop_tells_the_transport_nothing_more() -> None:
    socket = CountingSocket()
    conn = _conn(socket)
    conn.start()
    conn.drop(CloseCode.SLOW_CONSUMER, "slow consumer")
    conn.drop(CloseCode.GOING_AWAY, "server draining")
    assert socket.drops == [(CloseCode.SLOW_CONSUMER, "slow consumer")]
    assert conn.close_code == CloseCode.SLOW_CONSUMER
    await conn.stop()


async def test_an_expiry_set_while_closing_sets_no_timer() -> None:
    socket = CountingSocket()
    conn = _conn(socket)
    conn.start()
    conn.expire_at(time.time() + 60)
    assert conn._expiry is not None  # a live connection gets its timer
    conn.close(CloseCode.NORMAL, "")
    conn.expire_at(time.time() + 60)  # e.g. a refresh answered while the close goes out
    assert conn._expiry is None
    assert conn.close_code == CloseCode.NORMAL
    await conn.stop()


def test_a_connection_that_starts_waiting_for_auth_during_a_drain_is_told_at_once() -> None:
    waiting = AwaitingAuth()
    with waiting.waiting() as before:
        assert not before.is_set()
        waiting.close_all()
        assert before.is_set()
        with waiting.waiting() as late:
            assert late.is_set()  # the node is going away: do not wait for an auth frame
            assert len(waiting) == 2
    assert len(waiting) == 0
