"""wshub.js in real headless Chromium: a channel the server subscribes the connection to again
after a reconnect (a token's ``channels``) is a "resync" when the client cannot have what was
published between, and no news when it is at the same position.

The positions are the test's to choose, so a small real server on the `websockets` library
plays the hub (the page's origin is a real ``wshub serve``, for wshub.js).
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser
from websockets.asyncio.server import ServerConnection, serve

from tests.support import free_port
from tests.test_browser_client import browser, events, server_page, start

__all__ = ["browser", "server_page"]  # the fixtures, shared with test_browser_client

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # real Chromium

POSITIONS = [(1, "e"), (1, "e"), (4, "e"), (4, "f")]
"""Where ``news`` stands at each connection: the same, then further on, then a new epoch."""


class Resubscriber:
    """Welcomes a client, subscribes it to ``news`` at the next of :data:`POSITIONS`, answers
    its join, and closes each connection but the last with 1011 (the client reconnects)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0

    async def handler(self, ws: ServerConnection) -> None:
        offset, epoch = POSITIONS[self.connections]
        self.connections += 1
        welcome = {"type": "welcome", "user": "fay", "session": f"s{self.connections}",
                   "server": {"name": "resubscriber", "version": "0"}, "heartbeat": 0}  # fmt: skip
        await ws.send(json.dumps(welcome))
        await ws.send(json.dumps({"type": "subscribed", "channel": "news", "offset": offset,
                                  "epoch": epoch}))  # fmt: skip
        join = json.loads(await ws.recv())  # the client's one frame: its join (again)
        assert join["type"] == "join", join
        joined = {"type": "joined", "id": join["id"], "channel": join["channel"],
                  "offset": 0, "epoch": "j", "recovered": "since" in join}  # fmt: skip
        await ws.send(json.dumps(joined))
        if self.connections < len(POSITIONS):
            await ws.close(1011, "again")
        else:
            await ws.wait_closed()


async def test_a_channel_subscribed_again_further_on_or_in_a_new_epoch_is_a_resync(
    browser: Browser, server_page: str
) -> None:
    server = Resubscriber()
    async with serve(server.handler, "127.0.0.1", server.port):
        page, result = await start(browser, server_page, f"ws://127.0.0.1:{server.port}")
        assert result == {"state": "open"}
        await events(page, "welcome", len(POSITIONS))
        # The last connection's resync is recorded after the first's would have been.
        await events(page, "resync", 2)
        resyncs = await events(page, "resync")
    assert [
        (r["channel"], r["lastOffset"], r["lastEpoch"], r["offset"], r["epoch"]) for r in resyncs
    ] == [("news", 1, "e", 4, "e"), ("news", 4, "e", 4, "f")]
    await page.close()
