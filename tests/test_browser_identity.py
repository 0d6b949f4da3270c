"""wshub.js's identity inside the connection, in real headless Chromium against a library
``Hub`` with auth under uvicorn: the token goes in the ``auth`` frame (never the URL), is
refreshed before it ends, subscription tokens are renewed before theirs, and ``subscribed`` /
``unsubscribed`` reach the application.

Every check that something did NOT happen (no reconnect, no ``unsubscribed``) waits first for
a control connection of the ``websockets`` library, holding a token with the same end, to be
closed or taken out: by then the page's would have been too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, WebSocket, async_playwright, expect
from starlette.requests import Request
from starlette.responses import JSONResponse

from tests.identity_support import close_code, unidentified
from tests.support import Client, serve_in_process
from tests.test_browser import ARGS, CHROMIUM, say, texts
from tests.test_browser_client import events
from wshub import Hub
from wshub.app.server import create_app
from wshub.core.auth import TokenVerifier
from wshub.core.tokens import Claims, Signer
from wshub.transport.handshake import Handshake

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # real Chromium

SECRET = "browser-identity-secret-of-32-bytes-or-more"
KEY = "browser-identity-api-key"
SIGNER = Signer.from_secret(SECRET)
SHORT = 5
"""Seconds of the tokens that must be refreshed or renewed during a test."""

# A client in the page: window.log collects its events; its token function hands out
# window.tokens in turn and its subscription token function window.subTokens[channel].
START = """async ({ url, tokens, subTokens, join, options }) => {
  const { WshubClient } = await import("/static/wshub.js");
  window.log = [];
  window.tokens = tokens;
  window.subTokens = subTokens || {};
  const client = (window.client = new WshubClient(url, {
    backoffMin: 100,
    token: async (why) => {
      window.log.push({ type: "token", ...why });
      return window.tokens.shift() ?? null;
    },
    getSubscriptionToken: async (channel) => {
      window.log.push({ type: "subToken", channel });
      return (window.subTokens[channel] || []).shift() ?? null;
    },
    ...options,
  }));
  const kinds = ["welcome", "message", "subscribed", "unsubscribed", "refreshed", "error",
                 "reconnecting", "stopped", "resync"];
  for (const type of kinds) client.on(type, (d) => window.log.push({ type, ...d }));
  await client.connect();
  for (const channel of join || []) await client.join(channel);
  return client.user;
}"""


def token(user: str, ttl: float = 3600, now: float | None = None, **claims: Any) -> str:
    claims.setdefault("join", ["chat:*"])
    claims.setdefault("publish", ["chat:*", "room:*", "news", "alerts"])
    return SIGNER.sign(Claims(user, ttl=ttl, **claims), now)


def sub_token(user: str, channel: str, ttl: float, now: float | None = None) -> str:
    return SIGNER.sign(Claims(user, channel=channel, ttl=ttl), now)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host() -> AsyncIterator[str]:
    """The standalone app on a library Hub with auth, plus the token URL a backend would
    have (``/chat-token``: a token for ``?as=USER``), served by uvicorn in this loop."""
    app = create_app(Hub(), Handshake(TokenVerifier.from_secret(SECRET)), api_key=KEY)

    async def chat_token(request: Request) -> JSONResponse:
        return JSONResponse({"token": token(request.query_params["as"], ttl=3)})

    app.add_route("/chat-token", chat_token)
    async with serve_in_process(app) as where:
        yield where


async def start(
    browser: Browser,
    host: str,
    tokens: list[str],
    *,
    sub_tokens: dict[str, list[str]] | None = None,
    join: list[str] | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[Page, list[str], list[dict[str, Any]]]:
    """A page with a connected client: the page, the URLs its sockets opened, the frames they
    sent (as Chromium saw them)."""
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    urls: list[str] = []
    sent: list[dict[str, Any]] = []

    def watch(socket: WebSocket) -> None:
        urls.append(socket.url)
        socket.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", watch)
    await page.goto(f"http://{host}/healthz")
    arg = {"url": f"ws://{host}/ws", "tokens": tokens, "subTokens": sub_tokens,
           "join": join, "options": options or {}}  # fmt: skip
    await page.evaluate(START, arg)
    return page, urls, sent


async def logged(page: Page, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(
        f"window.log.filter(e => e.type === {kind!r})"
    )
    return found


def post(host: str, path: str, body: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://{host}{path}",
        json.dumps(body).encode(),
        {"Authorization": f"apikey {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        status: int = resp.status
        return status


async def until(client: Client, kind: str) -> dict[str, Any]:
    """The first frame of type ``kind``, past any other."""
    while (frame := await client.recv(timeout=10))["type"] != kind:
        pass
    return frame


@contextlib.asynccontextmanager
async def publisher(host: str) -> AsyncIterator[Client]:
    async with unidentified(f"ws://{host}") as pub:
        await pub.request({"type": "auth", "token": token("pub")})
        yield pub


async def test_the_token_goes_in_the_auth_frame_and_never_in_the_url(
    browser: Browser, host: str
) -> None:
    jwt = token("amy")
    page, urls, sent = await start(browser, host, [jwt])
    [welcome] = await logged(page, "welcome")
    assert welcome["user"] == "amy"
    assert urls == [f"ws://{host}/ws"]
    auth = sent[0]
    assert (auth["type"], auth["token"]) == ("auth", jwt)
    assert welcome["id"] == auth["id"]  # the welcome that answers it
    assert await page.evaluate("window.client.url") == f"ws://{host}/ws"
    [asked] = await logged(page, "token")
    assert asked == {"type": "token", "cause": "connect"}
    await page.close()

    # For a server of protocol version 1: the URL, and no auth frame.
    page, urls, sent = await start(browser, host, [jwt], options={"tokenInUrl": True})
    assert urls == [f"ws://{host}/ws?token={jwt}"]
    assert all(f["type"] != "auth" for f in sent)
    await page.close()


async def test_a_refresh_before_expiry_keeps_the_connection_past_the_old_exp(
    browser: Browser, host: str
) -> None:
    now = time.time()
    # SHORT seconds: long enough for a page to start on a loaded machine, short for a test.
    short, long = token("bo", ttl=SHORT, now=now), token("bo", ttl=3600, now=now)
    async with unidentified(f"ws://{host}") as control:
        await control.request({"type": "auth", "token": token("bo", ttl=SHORT, now=now)})
        page, _, sent = await start(browser, host, [short, long], join=["chat:lobby"])
        [refreshed] = await events(page, "refreshed")
        assert refreshed["expires"] == int(now + 3600)
        refresh = [f for f in sent if f["type"] == "refresh"]
        assert [f["token"] for f in refresh] == [long]
        # The control connection holds a token with the old end: closed at it, with 4001.
        assert await close_code(control) == 4001
    async with publisher(host) as pub:
        await pub.publish("chat:lobby", "past the old exp")
    [message] = await events(page, "message")
    assert message["data"] == "past the old exp"
    assert len(await logged(page, "welcome")) == 1  # the same connection throughout
    assert await page.evaluate("window.client.reconnects") == 0
    asked = await logged(page, "token")
    assert [a["cause"] for a in asked] == ["connect", "refresh"]
    assert asked[1]["expires"] == int(now + SHORT)
    await page.close()


async def test_a_subscription_token_is_renewed_before_its_exp_while_messages_flow(
    browser: Browser, host: str
) -> None:
    now = time.time()
    room = "room:42"  # beyond the connection token's join patterns: only its token allows it
    grants = [sub_token("cy", room, ttl=SHORT, now=now), sub_token("cy", room, ttl=3600, now=now)]
    async with unidentified(f"ws://{host}") as control:
        await control.request({"type": "auth", "token": token("cy")})
        await control.join(room, token=sub_token("cy", room, ttl=SHORT, now=now))
        page, _, sent = await start(browser, host, [token("cy")], sub_tokens={room: grants})
        await page.evaluate(f"window.client.join({room!r}, {{ meta: {{ name: 'Cy' }} }})")
        published = 0
        async with publisher(host) as pub:
            # Messages flow until the control connection's grant, of the same end, is over.
            gone = asyncio.ensure_future(until(control, "unsubscribed"))
            while not gone.done():
                published += 1
                await pub.publish(room, published)
                await asyncio.sleep(0.05)
            assert (await gone)["reason"] == "expired"
            for _ in range(3):
                published += 1
                await pub.publish(room, published)
    got = await events(page, "message", published)
    assert [m["data"] for m in got] == list(range(1, published + 1))  # no gap, no repeat
    assert await logged(page, "unsubscribed") == []
    [renewed] = await logged(page, "refreshed")
    assert (renewed["channel"], renewed["expires"]) == (room, int(now + 3600))
    room_joins = [f for f in sent if f["type"] == "join" and f["channel"] == room]
    assert [f["token"] for f in room_joins] == grants
    assert room_joins[1]["meta"] == {"name": "Cy"}  # presence keeps its meta
    await page.close()


async def test_a_subscription_token_that_is_not_renewed_ends_with_unsubscribed_expired(
    browser: Browser, host: str
) -> None:
    room = "room:7"
    page, _, _ = await start(
        browser, host, [token("di")], sub_tokens={room: [sub_token("di", room, ttl=SHORT)]}
    )
    await page.evaluate(f"window.client.join({room!r})")
    [gone] = await events(page, "unsubscribed")
    assert (gone["channel"], gone["reason"]) == (room, "expired")
    assert await page.evaluate(f"window.client.channels.has({room!r})") is False
    asked = await logged(page, "subToken")
    assert len(asked) == 2  # at the join, and before the end: there was none
    await page.close()


async def test_subscribed_and_unsubscribed_reach_the_application(
    browser: Browser, host: str
) -> None:
    # The token's channels claim, then the HTTP API; a refresh that no longer allows a channel.
    first = token("ed", ttl=SHORT, channels=["news"])
    narrower = token("ed", join=[], channels=["news"])
    page, _, _ = await start(browser, host, [first, narrower], join=["chat:lobby"])
    [news] = await events(page, "subscribed")
    assert (news["channel"], news["offset"]) == ("news", 0)
    assert await asyncio.to_thread(
        post, host, "/api/subscribe", {"user": "ed", "channel": "alerts"}
    )
    _, alerts = await events(page, "subscribed", 2)
    assert alerts["channel"] == "alerts"
    async with publisher(host) as pub:
        await pub.publish("news", "in the news")
        await pub.publish("alerts", "an alert")
    got = await events(page, "message", 2)
    assert [(m["channel"], m["data"]) for m in got] == [
        ("news", "in the news"), ("alerts", "an alert")
    ]  # fmt: skip
    await asyncio.to_thread(post, host, "/api/unsubscribe", {"user": "ed", "channel": "alerts"})
    # And the refresh, to a token without "chat:*", takes the connection out of chat:lobby.
    out = await events(page, "unsubscribed", 2)
    assert sorted((o["channel"], o["reason"]) for o in out) == [
        ("alerts", "server"), ("chat:lobby", "permissions")
    ]  # fmt: skip
    await events(page, "refreshed")
    channels = await page.evaluate("[...window.client.channels.keys()]")
    assert channels == ["news"]
    await page.close()


async def test_the_chat_page_gets_its_tokens_from_its_token_url(
    browser: Browser, host: str
) -> None:
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    # /chat-token hands out tokens of 3 seconds: the page stays only by refreshing.
    await page.goto(f"http://{host}/?token_url=%2Fchat-token%3Fas%3Dgus&autoconnect=1")
    await expect(page.locator("#members li[data-user='gus']")).to_be_visible()
    await expect(page.locator("#token-field")).to_be_hidden()  # nothing to paste
    control_token = await asyncio.to_thread(fetch_json, f"http://{host}/chat-token?as=gus")
    async with unidentified(f"ws://{host}") as control:
        # Minted after the page's first token: once it ends, the page's first one has ended.
        await control.request({"type": "auth", "token": control_token["token"]})
        assert await close_code(control) == 4001
    await say(page, "still here")
    await expect(texts(page).last).to_have_text("still here")
    await expect(page.locator("#status")).to_have_class("dot open")
    assert sockets == [f"ws://{host}/ws"]  # one connection, no token in its URL
    await page.close()


def fetch_json(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: dict[str, str] = json.loads(resp.read())
        return body
