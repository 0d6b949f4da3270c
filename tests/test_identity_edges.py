"""Where identity inside the connection meets the rest of a connection's life: a drain closes
a connection still waiting for its ``auth`` frame, and a ``join`` in flight when the server
takes the connection out of the same channel still gets its reply (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, close_code, unidentified
from tests.staged_broker import Gate, StagedBroker
from tests.support import Client, connect, serve_in_process
from wshub import Hub
from wshub.model.config import Settings

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


# --- a join in flight when the server takes the connection out of its channel ---------------


@contextlib.asynccontextmanager
async def staged_node() -> AsyncIterator[tuple[StagedBroker, Hub, str]]:
    """The real Hub on a staged broker, served by uvicorn on a real socket."""
    broker = StagedBroker()
    hub = Hub(broker, Settings())
    app = FastAPI()
    app.include_router(hub.router)
    async with serve_in_process(app) as host:
        yield broker, hub, f"ws://{host}"


async def taken_out_while_joining(hub: Hub, gate: Gate, ann: Client, frame_id: int) -> None:
    """With ann's join held at the broker, the server takes ann out of "c": ann hears it
    (``unsubscribed``) before the join goes on."""
    await ann.send({"type": "join", "channel": "c", "id": frame_id})
    await gate.wait_reached()
    await hub.unsubscribe("ann", "c")
    assert await ann.recv() == {"type": "unsubscribed", "channel": "c", "reason": "server"}
    gate.open()
    reply = await ann.recv()
    assert reply["type"] == "error", reply
    assert (reply["id"], reply["code"]) == (frame_id, "not_joined")


async def still_works(hub: Hub, ann: Client) -> None:
    """Out of "c" as the last frame said: a publication does not reach ann, a new join does."""
    await hub.publish("c", "while out")
    assert (await ann.request({"type": "ping"}))["type"] == "pong"  # nothing came before it
    joined = await ann.request({"type": "join", "channel": "c"})
    assert joined["type"] == "joined" and joined["offset"] == 1
    await hub.publish("c", "back in")
    message = await ann.expect("message")
    assert message["data"] == "back in"


async def test_a_first_join_in_flight_when_taken_out_is_answered_not_joined() -> None:
    async with staged_node() as (broker, hub, url), connect(url, "ann") as ann:
        await taken_out_while_joining(hub, broker.hold("recover"), ann, 101)
        await still_works(hub, ann)


async def test_a_repeat_join_in_flight_when_taken_out_is_answered_not_joined() -> None:
    async with staged_node() as (broker, hub, url), connect(url, "ann") as ann:
        assert (await ann.join("c"))["type"] == "joined"
        await taken_out_while_joining(hub, broker.hold("recover"), ann, 102)
        await still_works(hub, ann)


async def test_a_join_taken_out_while_registering_presence_leaves_no_presence() -> None:
    async with staged_node() as (broker, hub, url), connect(url, "bob") as bob:
        await bob.join("c")
        async with connect(url, "ann") as ann:
            await taken_out_while_joining(hub, broker.hold("presence_add"), ann, 103)
            # Served after the join's clean-up: ann's presence, added late, is gone by then.
            assert (await ann.request({"type": "ping"}))["type"] == "pong"
            presence = await bob.request({"type": "presence", "channel": "c"})
            assert [m["user"] for m in presence["members"]] == ["bob"]
            await still_works(hub, ann)
