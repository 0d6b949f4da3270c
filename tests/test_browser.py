"""The pages in real headless Chromium (Debian's), driven by Playwright, against real servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Route,
    async_playwright,
    expect,
)

from tests.conftest import ServerFactory
from tests.proxy import TcpProxy
from tests.support import ROOT, ServerProcess
from wshub import __version__
from wshub.client import Client

pytestmark = pytest.mark.slow  # a real Chromium per test

CHROMIUM = os.environ.get("WSHUB_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def open_chat(browser: Browser, base: str, user: str, server: str | None = None) -> Page:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(10_000)
    query = f"user={user}&autoconnect=1" + (f"&server={server}/ws" if server else "")
    await page.goto(f"{base}/?{query}")
    await expect(page.locator(f"#members li[data-user='{user}']")).to_be_visible()
    assert errors == []
    return page


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


def texts(page: Page) -> Locator:
    return page.locator("#messages li.msg .text")


async def members(page: Page) -> list[str]:
    return sorted(
        await page.locator("#members li").evaluate_all("els => els.map(e => e.dataset.user)")
    )


async def publish(url: str, channel: str, *items: str) -> None:
    async with Client(url, user="ops") as ops:
        for item in items:
            await ops.publish(channel, {"text": item})


async def test_two_pages_chat_and_presence_follows_a_third(
    server: ServerProcess, browser: Browser
) -> None:
    alice = await open_chat(browser, server.http, "alice")
    bob = await open_chat(browser, server.http, "bob")
    await expect(alice.locator("#members li[data-user='bob']")).to_be_visible()
    await say(alice, "hello bob")
    await expect(texts(bob)).to_have_text(["hello bob"])
    await say(bob, "hi alice")
    for page in (alice, bob):
        await expect(texts(page)).to_have_text(["hello bob", "hi alice"])
    assert await members(alice) == ["alice", "bob"]

    carol = await open_chat(browser, server.http, "carol")
    for page in (alice, bob):
        await expect(page.locator("#members li[data-user='carol']")).to_be_visible()
    await expect(texts(carol)).to_have_text(["hello bob", "hi alice"])
    await carol.close()
    for page in (alice, bob):
        await expect(page.locator("#members li[data-user='carol']")).to_have_count(0)
    assert await members(bob) == ["alice", "bob"]

    # A direct message: alice opens bob from the member list; bob gets it under "alice".
    await alice.click("#members li[data-user='bob'] button")
    await say(alice, "psst, bob")
    await expect(texts(alice)).to_have_text(["psst, bob"])
    await expect(bob.locator("#dms button[data-key='@alice'] .badge")).to_have_text("1")
    await bob.click("#dms button[data-key='@alice']")
    await expect(texts(bob)).to_have_text(["psst, bob"])


async def test_server_restart_shows_the_banner_and_new_messages_once_in_order(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server()
    alice = await open_chat(browser, node.http, "alice")
    bob = await open_chat(browser, node.http, "bob")
    await say(alice, "before 1")
    await say(bob, "before 2")
    for page in (alice, bob):
        await expect(texts(page)).to_have_text(["before 1", "before 2"])

    await asyncio.to_thread(node.stop)
    for page in (alice, bob):
        await expect(page.locator("#banner")).to_be_visible()
    await asyncio.to_thread(node.start)
    # Published on the new server while the pages are still backing off. Its history is new
    # (a new epoch), so the pages are told recovered: false and fetch it.
    await publish(node.url, "chat:lobby", "during 1", "during 2", "during 3")
    for page in (alice, bob):
        await expect(page.locator("#banner")).to_be_hidden(timeout=15_000)
    await say(alice, "after")
    expected = ["before 1", "before 2", "during 1", "during 2", "during 3", "after"]
    for page in (alice, bob):
        await expect(texts(page)).to_have_text(expected)
        await expect(page.locator("#messages li.note")).to_have_count(1)
        await expect(page.locator("#members li")).to_have_count(2)


async def test_a_cut_connection_recovers_the_missed_messages_from_history(
    server: ServerProcess, browser: Browser
) -> None:
    proxy = await TcpProxy(server.port).start()
    try:
        room = "chat:cut"
        alice = await open_chat(browser, server.http, "alice", proxy.url)
        await alice.fill("#room-input", "cut")
        await alice.press("#room-input", "Enter")
        await expect(alice.locator("#title")).to_have_text("# cut")
        await publish(server.url, room, "one")
        await expect(texts(alice)).to_have_text(["one"])
        proxy.cut()
        proxy.frozen = True  # refuse reconnects until the messages are published
        await expect(alice.locator("#banner")).to_be_visible()
        await publish(server.url, room, "two", "three", "four")
        proxy.thaw()
        await expect(alice.locator("#banner")).to_be_hidden()
        await publish(server.url, room, "five")
        await expect(texts(alice)).to_have_text(["one", "two", "three", "four", "five"])
        # recovered: true, so no "could not be recovered" note.
        await expect(alice.locator("#messages li.note")).to_have_count(0)
    finally:
        await proxy.close()


async def test_a_silent_dead_link_is_found_by_the_protocol_ping(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server("--ping-interval", "0.5")
    proxy = await TcpProxy(node.port).start()
    try:
        alice = await open_chat(browser, node.http, "alice", proxy.url)
        proxy.freeze()  # nothing is closed: only an unanswered ping can tell
        await expect(alice.locator("#banner")).to_be_visible(timeout=5_000)
        proxy.thaw()
        await expect(alice.locator("#banner")).to_be_hidden(timeout=10_000)
    finally:
        await proxy.close()


async def test_dashboard_counts_follow_connections(
    make_server: ServerFactory, browser: Browser
) -> None:
    node = make_server(WSHUB_API_KEY="letmein")
    dash = await browser.new_page()
    dash.set_default_timeout(10_000)
    await dash.goto(f"{node.http}/admin")
    await dash.fill("#key", "wrong")
    await dash.click("#sign-in")
    await expect(dash.locator("#login-error")).to_contain_text("API key")
    await dash.fill("#key", "letmein")
    await dash.click("#sign-in")
    await expect(dash.locator("#connections")).to_have_text("0")
    alice = await open_chat(browser, node.http, "alice")
    bob = await open_chat(browser, node.http, "bob")
    await expect(dash.locator("#connections")).to_have_text("2")
    await expect(dash.locator("#channel-rows tr")).to_have_text(["chat:lobby2"])
    await say(alice, "counted")
    await expect(texts(bob)).to_have_text(["counted"])
    await expect(dash.locator("#node-rows td").nth(4)).to_have_text("1")  # published
    await bob.close()
    await expect(dash.locator("#connections")).to_have_text("1")


async def test_the_readme_console_snippet_works_from_the_servers_own_page(
    server: ServerProcess, browser: Browser
) -> None:
    readme = (ROOT / "README.md").read_text()
    _, _, rest = readme.partition("The JSON protocol lives at `/ws`.")
    snippet = rest.split("```js\n", 1)[1].split("```", 1)[0]
    assert "127.0.0.1:8000" in snippet
    snippet = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    page = await browser.new_page()
    frames: list[dict[str, Any]] = []

    async def logged(msg: ConsoleMessage) -> None:
        if msg.args:
            value = await msg.args[0].json_value()
            if isinstance(value, dict):
                frames.append(value)

    page.on("console", logged)
    await page.goto(f"{server.http}/")  # the page the README says to open
    await page.add_script_tag(content=snippet)  # run as typed into the console
    async with asyncio.timeout(10):
        while [f["type"] for f in frames][-1:] != ["presence"]:
            await asyncio.sleep(0.05)
    assert [f["type"] for f in frames] == ["welcome", "joined", "message", "ack", "presence"]
    assert frames[2]["from"] == "alice"
    assert [m["user"] for m in frames[4]["members"]] == ["alice"]
    await page.close()


async def test_api_docs_render_with_no_network_beyond_the_server(
    server: ServerProcess, browser: Browser
) -> None:
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    elsewhere: list[str] = []

    async def only_the_server(route: Route) -> None:
        url = route.request.url
        if url.startswith(server.http) or url.startswith("data:"):
            await route.continue_()
        else:
            elsewhere.append(url)
            await route.abort()

    await page.route("**/*", only_the_server)
    await page.goto(f"{server.http}/docs")
    # Swagger UI has drawn every operation of the OpenAPI document.
    await expect(page.locator(".opblock-summary-path", has_text="/healthz")).to_be_visible()
    await expect(page.locator(".opblock-summary-path", has_text="/readyz")).to_be_visible()
    await page.goto(f"{server.http}/redoc")
    await expect(page.get_by_role("heading", name=f"wshub ({__version__})")).to_be_visible()
    # ReDoc has drawn the operations too, with their descriptions.
    await expect(page.get_by_text("Prometheus text format").first).to_be_attached()
    assert elsewhere == []
    await page.close()
