"""The chat page as a user meets it, in real headless Chromium against real ``wshub serve``:
it stays on one screen however long the conversation, a private message goes only to its
user, and a refused token is explained (never shown)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import ServerFactory
from tests.support import Client, Frame, ServerProcess, connect
from tests.test_browser import ARGS, CHROMIUM, open_chat, publish, say, texts
from tests.test_browser_client import KEY, post
from wshub.core.auth import mint_token

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # real Chromium

SECRET = "chat-page-secret-of-at-least-32-bytes!"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def sign_in_with_token(browser: Browser, base: str, token: str) -> Page:
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"{base}/")
    await page.fill("#token", token)
    await page.click("#connect")
    return page


async def test_the_composer_stays_in_view_after_60_messages(
    server: ServerProcess, browser: Browser
) -> None:
    page = await open_chat(browser, server.http, "scroller")
    await page.set_viewport_size({"width": 1280, "height": 720})
    lines = [f"line {i}" for i in range(60)]
    await publish(server.url, "chat:lobby", *lines)
    await expect(texts(page)).to_have_count(60)
    # The page is exactly the viewport: the message list scrolls, not the document.
    assert await page.evaluate("document.scrollingElement.scrollHeight") <= 720
    await expect(page.locator("#composer")).to_be_in_viewport(ratio=1)
    await expect(page.locator("#messages li.msg").last).to_be_in_viewport()
    await expect(page.locator("#messages li.msg").first).not_to_be_in_viewport()
    await say(page, "still typing")
    await expect(page.locator("#messages li.msg").last).to_be_in_viewport()
    await page.close()


async def test_a_members_name_opens_the_private_conversation(
    server: ServerProcess, browser: Browser
) -> None:
    # bob and carol are clients that are not ours: they see exactly the frames that arrive.
    async with connect(server.url, "bob") as bob, connect(server.url, "carol") as carol:
        for ws, name in ((bob, "bob"), (carol, "carol")):
            await ws.join("chat:lobby", meta={"name": name})
        alice = await open_chat(browser, server.http, "alice")
        await alice.click("#members li[data-user='bob'] button")
        await expect(alice.locator("#title")).to_have_text("Direct: bob")
        await expect(alice.locator("#text")).to_have_attribute(
            "placeholder", "Private message to bob"
        )
        # No members in a conversation of two: no empty count bubble either.
        await expect(alice.locator("#member-count")).to_be_hidden()
        await say(alice, "psst, bob")
        await expect(texts(alice)).to_have_text(["psst, bob"])
        direct = await delivered(bob)
        assert (direct["type"], direct["from"], direct["data"]) == (
            "direct", "alice", {"text": "psst, bob"}
        )  # fmt: skip

        # Back in the lobby, alice says something public. It reaches carol, and it is the
        # first thing she gets: the private message, had it gone to the lobby, came first.
        await alice.click("#rooms button[data-key='chat:lobby']")
        await say(alice, "hello all")
        first = await delivered(carol)
        assert (first["type"], first["from"], first["data"]) == (
            "message", "alice", {"text": "hello all"}
        )  # fmt: skip
        await expect(texts(alice).last).to_have_text("hello all")
        assert "psst, bob" not in await texts(alice).all_inner_texts()
        await alice.close()


async def delivered(client: Client) -> Frame:
    """The next message or direct message, past presence events."""
    while True:
        frame = await client.recv()
        if frame["type"] not in ("member_joined", "member_left"):
            return frame


async def test_a_token_that_allows_no_channel_says_so_and_shows_no_green_dot(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    page = await sign_in_with_token(browser, node.http, mint_token(SECRET, "zed"))
    await expect(page.locator("#alert")).to_be_visible()
    await expect(page.locator("#alert")).to_contain_text("Cannot join #lobby: forbidden")
    await expect(page.locator("#status")).to_have_class("dot error")
    await expect(page.locator("#login")).to_be_hidden()
    await page.close()


@pytest.mark.parametrize(
    ("signed_with", "ttl", "reason"),
    [(SECRET, -60, "token expired"), ("x" * 40, 3600, "token signature does not verify")],
)
async def test_a_refused_token_is_explained_and_never_shown(
    make_server: ServerFactory, browser: Browser, signed_with: str, ttl: int, reason: str
) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    token = mint_token(signed_with, "yan", join=["chat:*"], ttl=ttl, now=time.time())
    page = await sign_in_with_token(browser, node.http, token)
    await expect(page.locator("#login-error")).to_be_visible()
    await expect(page.locator("#login-error")).to_contain_text(reason)
    shown = await page.evaluate("document.body.innerText")
    assert token not in shown
    assert token.split(".")[1] not in shown  # not even the claims
    await page.close()


async def test_removed_through_the_api_the_page_says_why_and_stays_down(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_API_KEY=KEY)
    page = await open_chat(browser, node.http, "gus")
    status = await asyncio.to_thread(post, f"{node.http}/api/disconnect", b'{"user": "gus"}')
    assert status == 204
    await expect(page.locator("#alert")).to_contain_text("(code 1008)")
    await expect(page.locator("#status")).to_have_class("dot error")
    await expect(page.locator("body")).to_have_attribute("data-state", "closed")
    await expect(page.locator("#banner")).to_be_hidden()  # not "reconnecting"
    await page.close()


async def test_an_expiring_token_is_renewed_in_place(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)

    def hal(ttl: float) -> str:
        return mint_token(SECRET, "hal", join=["chat:*"], publish=["chat:*"], ttl=ttl)

    page = await sign_in_with_token(browser, node.http, hal(6))  # signed in before it ends
    await expect(page.locator("#status")).to_have_class("dot open")
    # The renewal form comes at the token's end, up to its whole 6 s after sign-in.
    await expect(page.locator("#renew")).to_be_visible(timeout=15_000)
    await expect(page.locator("#renew-reason")).to_contain_text("token expired")
    await page.fill("#renew-token", hal(3600))
    await page.click("#renew-go")
    await expect(page.locator("#renew")).to_be_hidden()
    await expect(page.locator("#status")).to_have_class("dot open")
    await say(page, "still here")
    await expect(texts(page).last).to_have_text("still here")
    await page.close()
