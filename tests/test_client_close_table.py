"""Every row of the protocol's close table, for the Python client: what it does after each
close code and refused handshake.

The rows a real ``wshub serve`` sends on demand are produced with one (1001 by a restart,
4008 by a client that stops reading); 1000, 1011 and 1012, which the server sends only in
states a test cannot bring about on purpose, come from a small server on the ``websockets``
library that speaks the protocol and closes when told. Elsewhere: 1008 and 1009 in
test_client_stops.py, a 503 with ``Retry-After`` too; 4001 and 4003 in
test_client_identity.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from tests.conftest import ServerFactory
from tests.support import connect
from wshub.client import Client, Gap, State, Stopped


class Scripted:
    """A protocol server that closes connection ``n`` with ``closes[n]`` right after its
    first ``join`` (after a message in the channel), or refuses its handshake with
    ``refusals[n]``. It keeps every ``join`` it got, with its connection's number."""

    def __init__(self, closes: list[int | None], refusals: dict[int, int] | None = None) -> None:
        self.closes = closes
        self.refusals = refusals or {}
        self.joins: list[tuple[int, dict[str, Any]]] = []
        self.handshakes = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Scripted:
        self._server = await serve(self._serve, "127.0.0.1", 0, process_request=self._refuse)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _refuse(self, connection: ServerConnection, request: Request) -> Response | None:
        n, self.handshakes = self.handshakes, self.handshakes + 1
        status = self.refusals.get(n)
        if status is None:
            return None
        response = connection.respond(HTTPStatus(status), f"refused with {status}\n")
        if status == 503:
            response.headers["Retry-After"] = "1"
        return response

    async def _serve(self, ws: ServerConnection) -> None:
        n = self.handshakes - 1
        welcome = {"type": "welcome", "user": "u", "session": f"s{n}", "heartbeat": 0}
        await ws.send(json.dumps(welcome))
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "ping":
                await ws.send(json.dumps({"type": "pong", "id": frame["id"]}))
            elif frame["type"] == "join":
                self.joins.append((n, frame))
                channel, fid = frame["channel"], frame["id"]
                joined = {"type": "joined", "id": fid, "channel": channel, "offset": 7}
                await ws.send(json.dumps({**joined, "epoch": "e1", "recovered": "since" in frame}))
                message = {"type": "message", "channel": channel, "offset": 8, "epoch": "e1"}
                await ws.send(json.dumps({**message, "from": None, "data": n, "ts": 0}))
                code = self.closes[n] if n < len(self.closes) else None
                if code is not None:
                    await ws.close(code, f"closing with {code}")
                    return


class States:
    """A client's states as they come, to wait for it to be back."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[State] = asyncio.Queue()

    def __call__(self, state: State) -> None:
        self.seen.put_nowait(state)

    async def back(self) -> None:
        """Wait until the client was reconnecting and is open again."""
        async with asyncio.timeout(15):
            while await self.seen.get() != "reconnecting":
                pass
            while await self.seen.get() != "open":
                pass


async def test_1000_ends_the_link_and_its_subscriptions(caplog: pytest.LogCaptureFixture) -> None:
    async with Scripted([1000]) as server, Client(server.url, backoff_min=0.01) as c:
        stream = c.subscribe("a:b")
        got = [m.data async for m in stream]  # ends without raising
        stopped = await c.wait_stopped()
        assert got == [0] and stopped is not None and stopped.code == 1000
        assert c.reconnects == 0 and server.handshakes == 1 and c.state == "closed"


@pytest.mark.parametrize("code", [1011, 1012])
async def test_a_passing_failure_reconnects_and_joins_with_since(code: int) -> None:
    states = States()
    async with (
        Scripted([code]) as server,
        Client(server.url, backoff_min=0.01, on_state=states) as c,
    ):
        stream = c.subscribe("a:b")
        assert (await anext(stream)).data == 0
        await states.back()
        assert c.reconnects == 1 and c.stopped is None
        assert server.joins[1] == (1, {**server.joins[1][1], "since": {"offset": 8, "epoch": "e1"}})


async def test_a_403_on_reconnect_stops_as_1008() -> None:
    async with Scripted([1012], {1: 403}) as server, Client(server.url, backoff_min=0.01) as c:
        await c.join("a:b")
        stopped = await asyncio.wait_for(c.wait_stopped(), 10)
        assert stopped is not None and stopped.code == 1008
        assert "refused with 403" in stopped.reason and server.handshakes == 2


@pytest.mark.parametrize("function", [False, True])
async def test_a_401_on_reconnect_asks_for_a_new_token(function: bool) -> None:
    asked: list[str] = []

    async def fresh() -> str:
        asked.append(f"t{len(asked)}")
        return asked[-1]

    states = States()
    async with (
        Scripted([1001], {1: 401}) as server,
        Client(
            server.url,
            token=fresh if function else "t0",
            auth="header",  # the scripted server takes any header, and no auth frame
            backoff_min=0.01,
            on_state=states,
        ) as c,
    ):
        await c.join("a:b")
        if function:
            await states.back()  # with the new token
            assert asked == ["t0", "t1"] and c.reconnects == 1 and server.handshakes == 3
        else:
            stopped = await asyncio.wait_for(c.wait_stopped(), 10)
            assert stopped is not None and stopped.code == 4001
            assert "no new token" in stopped.reason and server.handshakes == 2


async def test_1001_from_a_restarting_server_reconnects(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wshub.client")
    node = make_server("--drain-seconds", "5")
    gaps: list[Gap] = []
    async with Client(node.url, user="rex", backoff_min=0.01) as rex:
        stream = rex.subscribe("re:start", on_gap=gaps.append)
        await rex.join("re:start")
        await rex.publish("re:start", "before")
        assert (await anext(stream)).data == "before"
        await asyncio.to_thread(node.restart)  # drains: 1001 to every connection, then stops
        await asyncio.wait_for(rex.ping(), 15)
        said = [r.getMessage() for r in caplog.records]
        assert any("closed (1001" in line for line in said), said
        assert rex.reconnects == 1 and rex.stopped is None
        await rex.publish("re:start", "after")
        assert (await anext(stream)).data == "after"
        assert len(gaps) == 1  # the new process has a new epoch: the client is told


async def test_4008_as_a_slow_consumer_reconnects_and_resumes(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wshub.client")
    node = make_server("--queue-size", "16", "--history-size", "1000", "--max-frame-bytes", "70000")
    count, payload = 400, "x" * 32_000
    async with (
        Client(node.url, user="slo", backoff_min=0.01) as slo,
        connect(node.url, "pub") as pub,
    ):
        await slo.join("slow:x")
        stream = slo.subscribe("slow:x")
        assert slo._ws is not None
        slo._ws.transport.pause_reading()  # it stops reading: the server's queue fills
        for i in range(count):
            await pub.publish("slow:x", [i, payload])
        async with asyncio.timeout(30):  # until the server cut it off: out of presence
            presence = {"type": "presence", "channel": "slow:x"}
            while (await pub.request(presence))["members"]:
                await asyncio.sleep(0.05)
        slo._ws.transport.resume_reading()
        got = [(await asyncio.wait_for(anext(stream), 20)).offset for _ in range(count)]
        assert got == list(range(1, count + 1))  # resumed with since: none lost, none twice
        said = [r.getMessage() for r in caplog.records]
        assert any("closed (4008" in line for line in said), said
        # At least once: the replay after the resume may overflow its queue of 16 again.
        assert slo.reconnects >= 1 and slo.stopped is None


async def test_stopped_is_raised_by_requests_after_a_stop() -> None:
    async with Scripted([1011, 1000]) as server, Client(server.url, backoff_min=0.01) as c:
        await c.join("a:b")
        stopped = await asyncio.wait_for(c.wait_stopped(), 10)
        assert stopped is not None and stopped.code == 1000 and c.reconnects == 1
        with pytest.raises(Stopped):
            await c.ping()
