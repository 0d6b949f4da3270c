"""wshub.js in real headless Chromium against real ``wshub serve``: every close code and every
refused handshake gets what the protocol's "client does" column says, and the application is
told why the client stopped.

Each test drives a client from a page of the server's origin and records its events. A test
that checks the client did NOT reconnect waits for its "stopped" event: the client emits it
exactly where it would otherwise have scheduled the reconnect. Where wshub cannot be made to
close with a code on demand (1000, 1011, 4008), a small real server on the `websockets`
library closes with it (:class:`Closer`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, Page, WebSocket, async_playwright
from websockets.asyncio.server import ServerConnection, serve

from tests.conftest import ServerFactory
from tests.support import ROOT, ServerProcess, connect, free_port, serve_in_process
from tests.test_browser import ARGS, CHROMIUM
from wshub import Hub
from wshub.core.auth import mint_token
from wshub.core.tokens import Claims, Signer

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # real Chromium

SECRET = "browser-client-secret-of-32-bytes-or-more"
KEY = "browser-client-api-key"

# Starts a client in the page: window.log collects its events, window.tokens feeds getToken
# after a close or a refusal. It has no token to refresh with (tests/test_browser_identity.py
# has), so a token that ends closes the connection with 4001.
START = """async ({ url, token, tokens, user, tokenInUrl }) => {
  const { WshubClient } = await import("/static/wshub.js");
  window.log = [];
  window.tokens = tokens;
  const options = { token, user, tokenInUrl, backoffMin: 100, backoffMax: 400 };
  if (tokens) options.getToken = async (why) => {
    window.log.push({ type: "getToken", ...why });
    return why.cause === "refresh" ? null : window.tokens.shift() ?? null;
  };
  const client = (window.client = new WshubClient(url, options));
  for (const type of ["stopped", "reconnecting", "welcome", "message", "resync"]) {
    client.on(type, (d) => window.log.push({ type, ...d }));
  }
  try {
    await client.connect();
    await client.join("chat:lobby");
    return { state: client.state };
  } catch (err) {
    return { error: err.name, code: err.code, status: err.status, message: err.message };
  }
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def start(
    browser: Browser,
    origin: str,
    ws: str,
    token: str | None = None,
    tokens: list[str] | None = None,
    user: str | None = None,
    sent: list[dict[str, Any]] | None = None,
    in_url: bool = False,
) -> tuple[Page, dict[str, Any]]:
    """A page running a client; ``sent`` collects every frame it sends, as Chromium saw it."""
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    if sent is not None:
        record = sent

        def frames(socket: WebSocket) -> None:
            socket.on("framesent", lambda payload: record.append(json.loads(payload)))

        page.on("websocket", frames)
    await page.goto(f"{origin}/healthz")
    arg = {"url": f"{ws}/ws", "token": token, "tokens": tokens, "user": user, "tokenInUrl": in_url}
    result: dict[str, Any] = await page.evaluate(START, arg)
    return page, result


async def events(page: Page, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """The client's events of ``kind``, once at least ``count`` have been recorded."""
    await page.wait_for_function(
        f"(window.log || []).filter(e => e.type === {kind!r}).length >= {count}"
    )
    found: list[dict[str, Any]] = await page.evaluate(
        f"window.log.filter(e => e.type === {kind!r})"
    )
    return found


def token(user: str, ttl: float = 3600) -> str:
    return mint_token(SECRET, user, join=["chat:*"], publish=["chat:*"], ttl=ttl, now=time.time())


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, body, {"Authorization": f"apikey {KEY}", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        status: int = resp.status
        return status


async def test_disconnected_through_the_api_it_stops_and_says_so(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_API_KEY=KEY)
    page, result = await start(browser, node.http, node.url, user="ann")
    assert result == {"state": "open"}
    await asyncio.to_thread(post, f"{node.http}/api/disconnect", b'{"user": "ann"}')
    [stopped] = await events(page, "stopped")
    assert stopped["code"] == 1008
    assert await page.evaluate("window.log.filter(e => e.type === 'reconnecting')") == []
    assert await page.evaluate("window.client.state") == "closed"
    await page.close()


async def test_close_codes_map_to_the_protocols_client_does_column(
    browser: Browser, server_page: str
) -> None:
    page = await browser.new_page()
    await page.goto(f"{server_page}/healthz")
    actions = await page.evaluate(
        """async () => {
          const { closeAction } = await import("/static/wshub.js");
          const codes = [1000, 1001, 1008, 1009, 1011, 1012, 4001, 4003, 4008, 1006];
          return Object.fromEntries(codes.map((c) => [c, closeAction(c)]));
        }"""
    )
    assert actions == {
        "1000": "stop", "1001": "reconnect", "1008": "stop", "1009": "stop",
        "1011": "reconnect", "1012": "reconnect", "4001": "token", "4003": "token",
        "4008": "reconnect", "1006": "reconnect",
    }  # fmt: skip
    await page.close()


async def test_a_token_that_expires_while_connected_is_renewed_through_the_callback(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    page, result = await start(
        browser, node.http, node.url, token=token("bea", ttl=3), tokens=[token("bea")]
    )
    assert result == {"state": "open"}
    refresh, asked = await events(page, "getToken", 2)
    assert refresh["cause"] == "refresh"  # and it had none
    assert (asked["cause"], asked["code"], asked["reason"]) == ("renew", 4001, "token expired")
    await events(page, "welcome", 2)
    await page.wait_for_function("window.client.state === 'open' && window.client.reconnects")
    # Joined again: a publication after the renewal reaches the page.
    async with connect(node.url, token=token("pub")) as pub:
        await pub.publish("chat:lobby", "after the renewal")
    [message] = await events(page, "message")
    assert message["data"] == "after the renewal"
    await page.close()


async def test_an_expired_token_with_no_new_one_stops_with_the_reason(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    # Connected, then expired, and the application has no other token.
    page, result = await start(browser, node.http, node.url, token=token("cid", ttl=3), tokens=[])
    assert result == {"state": "open"}
    [stopped] = await events(page, "stopped")
    assert (stopped["code"], stopped["reason"]) == (4001, "token expired")
    await page.close()

    # In the URL (as for a protocol v1 server), refused at the handshake (401): handled as
    # 4001, with the server's reason.
    expired = token("cid", ttl=-5)
    page, result = await start(browser, node.http, node.url, expired, [], in_url=True)
    assert result["error"] == "Stopped"
    assert (result["code"], result["status"]) == (4001, 401)
    assert "token expired" in result["message"]
    [asked] = await events(page, "getToken")
    assert asked["reason"] == "token expired"
    await page.close()

    # The same refusal, and the callback has a good token: connected.
    page, result = await start(browser, node.http, node.url, expired, [token("cid")], in_url=True)
    assert result == {"state": "open"}
    await page.close()


async def test_a_foreign_origin_is_told_and_stops(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server("--allowed-origins", "https://app.example")
    # A page of another origin (localhost is not 127.0.0.1 to a browser) opens the socket.
    page, result = await start(
        browser, f"http://localhost:{node.port}", node.url, user="dee", tokens=[]
    )
    assert result["error"] == "Stopped"
    assert (result["code"], result["status"]) == (1008, 403)
    assert "origin not allowed" in result["message"]
    await page.close()


async def test_a_full_node_is_retried_no_sooner_than_retry_after(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server("--max-connections-per-user", "1")
    async with connect(node.url, "eve"):
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        await page.goto(f"{node.http}/healthz")
        pending = asyncio.ensure_future(
            page.evaluate(START, {"url": f"{node.url}/ws", "user": "eve", "token": None})
        )
        [retry] = await events(page, "reconnecting")
    assert (retry["code"], retry["status"]) == (1001, 503)
    assert retry["delay"] >= 1000  # Retry-After: 1, where the backoff alone is 50-100 ms
    assert await pending == {"state": "open"}  # connected once eve's other connection left
    await page.close()


async def test_the_library_docs_page_gets_wshub_js_from_hub_router(browser: Browser) -> None:
    # docs/library.md's example as written: an app with its own page and only hub.router.
    doc = (ROOT / "docs" / "library.md").read_text().split("## Serving wshub.js", 1)[1]
    snippet = doc.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(snippet, "docs/library.md", "exec"), scope)
    hub: Hub = scope["hub"]
    async with serve_in_process(scope["app"]) as host, connect(f"ws://{host}", "ops") as ops:
        await ops.join("orders:1")
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        await page.goto(f"http://{host}/")
        joined = await ops.expect("member_joined")  # the page is in the channel
        assert joined["user"] == "alice"
        await hub.publish("orders:1", {"status": "shipped"})
        await page.wait_for_function("document.body.innerText.includes('shipped')")
        await page.close()


def joins(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in sent if f["type"] == "join"]


class Closer:
    """A real WebSocket server (the `websockets` library) with just enough of the protocol:
    it welcomes a client, answers its joins at offset 1 of epoch ``e``, sends that message,
    and closes the first connection with ``code``. Later connections stay open."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.port = free_port()
        self.connections = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        first = self.connections == 1
        welcome = {"type": "welcome", "user": "fay", "session": f"s{self.connections}",
                   "server": {"name": "closer", "version": "0"}, "heartbeat": 0}  # fmt: skip
        await ws.send(json.dumps(welcome))
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] != "join":
                continue
            joined = {"type": "joined", "id": frame["id"], "channel": frame["channel"],
                      "offset": 1, "epoch": "e", "recovered": "since" in frame}  # fmt: skip
            await ws.send(json.dumps(joined))
            if first:
                message = {"type": "message", "channel": frame["channel"], "offset": 1,
                           "epoch": "e", "from": None, "data": "one", "ts": 0}  # fmt: skip
                await ws.send(json.dumps(message))
                await ws.close(self.code, f"closing with {self.code}")


async def test_a_normal_close_is_left_alone(browser: Browser, server_page: str) -> None:
    closer = Closer(1000)
    async with serve(closer.handler, "127.0.0.1", closer.port):
        page, result = await start(browser, server_page, f"ws://127.0.0.1:{closer.port}")
        assert result == {"state": "open"}
        [stopped] = await events(page, "stopped")
    assert (stopped["code"], stopped["reason"]) == (1000, "closing with 1000")
    assert await page.evaluate("window.log.filter(e => e.type === 'reconnecting')") == []
    assert closer.connections == 1
    await page.close()


# 4008 here too: a browser reads too fast to be made a slow consumer on demand.
@pytest.mark.parametrize("code", [1011, 4008])
async def test_an_internal_error_or_a_slow_consumer_reconnects_and_joins_with_since(
    browser: Browser, server_page: str, code: int
) -> None:
    closer = Closer(code)
    sent: list[dict[str, Any]] = []
    async with serve(closer.handler, "127.0.0.1", closer.port):
        page, result = await start(browser, server_page, f"ws://127.0.0.1:{closer.port}", sent=sent)
        assert result == {"state": "open"}
        [again] = await events(page, "reconnecting")
        await events(page, "welcome", 2)
        await page.wait_for_function("window.client.state === 'open' && window.client.reconnects")
    assert (again["code"], again["reason"]) == (code, f"closing with {code}")
    assert 50 <= again["delay"] <= 100  # backoffMin 100 with jitter: the upper half
    first, rejoin = joins(sent)
    assert "since" not in first
    assert rejoin["since"] == {"offset": 1, "epoch": "e"}
    assert await page.evaluate("window.log.filter(e => e.type === 'resync')") == []
    await page.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server_page(browser: Browser) -> AsyncIterator[str]:
    """A wshub node whose origin serves the pages of tests that talk to other servers."""
    node = await asyncio.to_thread(ServerProcess().start)
    yield node.http
    await asyncio.to_thread(node.stop)


async def test_a_library_hub_whose_uvicorn_restarts_closes_1012_and_the_client_resumes(
    browser: Browser, server_page: str
) -> None:
    # Stock uvicorn (no drain of wshub's own) closes every WebSocket with 1012 as it stops.
    hub = Hub()
    app = FastAPI()
    app.include_router(hub.router)
    port = free_port()

    async def serving() -> tuple[uvicorn.Server, asyncio.Task[None]]:
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        return server, task

    first, task = await serving()
    sent: list[dict[str, Any]] = []
    page, result = await start(
        browser, server_page, f"ws://127.0.0.1:{port}", user="kim", sent=sent
    )
    assert result == {"state": "open"}
    await hub.publish("chat:lobby", "before the restart")
    await events(page, "message")
    first.should_exit = True
    await task
    again = (await events(page, "reconnecting"))[0]  # then attempts while it is down
    assert (again["code"], again["reason"]) == (1012, "service restart")
    second, task = await serving()
    await events(page, "welcome", 2)
    await page.wait_for_function("window.client.state === 'open' && window.client.reconnects")
    rejoin = joins(sent)[1]
    assert rejoin["since"]["offset"] == 1
    await page.close()
    second.should_exit = True
    await task


async def test_a_draining_node_closes_with_1001_and_the_client_resumes_after_it(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_DRAIN_SECONDS="0.2")
    sent: list[dict[str, Any]] = []
    page, result = await start(browser, node.http, node.url, user="gil", sent=sent)
    assert result == {"state": "open"}
    async with connect(node.url, "pub") as pub:
        await pub.publish("chat:lobby", "before the drain")
    await events(page, "message")
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)  # a drain: every connection closed with 1001
    [again] = await events(page, "reconnecting")
    assert (again["code"], again["reason"]) == (1001, "server draining: reconnect")
    await asyncio.to_thread(node.proc.wait, 10)
    await asyncio.to_thread(node.restart)  # on the same port: where the client comes back
    await events(page, "welcome", 2)
    await page.wait_for_function("window.client.state === 'open' && window.client.reconnects")
    first, rejoin = joins(sent)[:2]
    assert "since" not in first
    assert rejoin["since"]["offset"] == 1
    # A new process has a new in-memory history: the client is told it could not resume.
    [resync] = await events(page, "resync")
    assert (resync["lastOffset"], resync["lastEpoch"]) == (1, rejoin["since"]["epoch"])
    await page.close()


async def test_a_frame_over_the_hard_cap_closes_1009_and_the_client_stops(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server("--max-frame-bytes", "1024")  # the hard cap: 1 MiB
    page, result = await start(browser, node.http, node.url, user="hal")
    assert result == {"state": "open"}
    refused = await page.evaluate(
        """() => window.client.publish("chat:lobby", "x".repeat(1100000))
              .then(() => "published", (err) => err.name)"""
    )
    assert refused == "ConnectionLost"
    [stopped] = await events(page, "stopped")
    assert stopped["code"] == 1009
    assert await page.evaluate("window.log.filter(e => e.type === 'reconnecting')") == []
    await page.close()


async def test_an_auth_frame_that_does_not_verify_asks_for_a_token_4003(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    forged = Signer.from_secret("f" * 40).sign(Claims("jo", join=["chat:*"]))
    page, result = await start(browser, node.http, node.url, token=forged, tokens=[token("jo")])
    assert result == {"state": "open"}
    [asked] = await events(page, "getToken")
    # The reason is the server's error answering the auth frame, not just the close's.
    assert (asked["cause"], asked["code"]) == ("renew", 4003)
    assert asked["reason"] == "token signature does not verify"
    assert await page.evaluate("window.client.user") == "jo"
    await page.close()

    page, result = await start(browser, node.http, node.url, token=forged, tokens=[])
    assert result["error"] == "Stopped"
    assert result["code"] == 4003
    assert "token signature does not verify" in result["message"]
    await page.close()
