"""wshub.js in real headless Chromium against real ``wshub serve``: every close code and every
refused handshake gets what the protocol's "client does" column says, and the application is
told why the client stopped.

Each test drives a client from a page of the server's origin and records its events. A test
that checks the client did NOT reconnect waits for its "stopped" event: the client emits it
exactly where it would otherwise have scheduled the reconnect.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ServerFactory
from tests.support import ROOT, connect, serve_in_process
from tests.test_browser import ARGS, CHROMIUM
from wshub import Hub
from wshub.core.auth import mint_token

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # real Chromium

SECRET = "browser-client-secret-of-32-bytes-or-more"
KEY = "browser-client-api-key"

# Starts a client in the page: window.log collects its events, window.tokens feeds getToken.
START = """async ({ url, token, tokens, user }) => {
  const { WshubClient } = await import("/static/wshub.js");
  window.log = [];
  window.tokens = tokens;
  const options = { token, user, backoffMin: 100 };
  if (tokens) options.getToken = async (why) => {
    window.log.push({ type: "getToken", ...why });
    return window.tokens.shift() ?? null;
  };
  const client = (window.client = new WshubClient(url, options));
  for (const type of ["stopped", "reconnecting", "welcome", "message"]) {
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
) -> tuple[Page, dict[str, Any]]:
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    await page.goto(f"{origin}/healthz")
    arg = {"url": f"{ws}/ws", "token": token, "tokens": tokens, "user": user}
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


async def test_close_codes_map_to_the_protocols_client_does_column(browser: Browser) -> None:
    page = await browser.new_page()
    await page.set_content("<title>codes</title>")
    source = (ROOT / "wshub" / "static" / "wshub.js").read_text()
    actions = await page.evaluate(
        """async (source) => {
          const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
          const { closeAction } = await import(url);
          const codes = [1000, 1001, 1008, 1009, 1011, 1012, 4001, 4003, 4008, 1006];
          return Object.fromEntries(codes.map((c) => [c, closeAction(c)]));
        }""",
        source,
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
    [asked] = await events(page, "getToken")
    assert (asked["code"], asked["reason"]) == (4001, "token expired")
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

    # Refused at the handshake (401): handled as 4001, with the server's reason.
    page, result = await start(browser, node.http, node.url, token=token("cid", ttl=-5), tokens=[])
    assert result["error"] == "Stopped"
    assert (result["code"], result["status"]) == (4001, 401)
    assert "token expired" in result["message"]
    [asked] = await events(page, "getToken")
    assert asked["reason"] == "token expired"
    await page.close()

    # The same refusal, and the callback has a good token: connected.
    page, result = await start(
        browser, node.http, node.url, token=token("cid", ttl=-5), tokens=[token("cid")]
    )
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
