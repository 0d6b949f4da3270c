"""Where identity inside the connection meets the rest of a connection's life: a drain closes
a connection still waiting for its ``auth`` frame, and a ``join`` in flight when the server
takes the connection out of the same channel still gets its reply (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, close_code, unidentified

AUTH_TIMEOUT = 30.0


@pytest.mark.slow
async def test_a_drain_closes_a_connection_waiting_for_auth_with_1001_at_once(
    make_server: ServerFactory,
) -> None:
    node = make_server(
        "--auth-timeout", str(AUTH_TIMEOUT), "--drain-seconds", "1", WSHUB_JWT_SECRET=SECRET
    )
    async with unidentified(node.url) as waiting:
        # Answered from the wait for auth: the connection is past its upgrade, nobody's yet.
        assert await waiting.request({"type": "ping"}) == {"type": "pong", "id": 1}
        started = time.monotonic()
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        # Without the drain closing it, nothing comes before the auth timeout ends it.
        assert await close_code(waiting, timeout=AUTH_TIMEOUT / 2) == 1001
        assert waiting.ws.close_reason == "server draining: reconnect"
        closed = time.monotonic() - started
    exited = await asyncio.wait_for(asyncio.to_thread(node.proc.wait), AUTH_TIMEOUT / 2)
    assert exited == 0
    # Within the one-second drain, and the process did not wait the auth timeout either.
    assert closed < 2.0
    assert time.monotonic() - started < AUTH_TIMEOUT / 3
