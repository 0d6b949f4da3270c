"""The typed-channels example (examples/orders.py) end to end: uvicorn, and real Chromium
pages for a customer following an order and for staff updating it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from examples import orders
from tests.support import serve_in_process
from tests.test_browser import ARGS, CHROMIUM

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # real Chromium


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def shop() -> AsyncIterator[str]:
    async with serve_in_process(orders.app) as address:
        yield f"http://{address}"


async def signed_in(browser: Browser, base: str, user: str | None, page_path: str) -> Page:
    context = await browser.new_context()  # its own cookies: one user per context
    page = await context.new_page()
    page.set_default_timeout(10_000)
    if user is None:
        await page.goto(f"{base}{page_path}")
    else:
        await page.goto(f"{base}/login?user={user}&next={page_path}")
    return page


async def test_a_customer_follows_an_order_that_staff_update(browser: Browser, shop: str) -> None:
    alice = await signed_in(browser, shop, "alice", "/orders/42")
    sam = await signed_in(browser, shop, "sam", "/staff/orders/42")
    for page in (alice, sam):
        await expect(page.locator("#state")).to_have_text("following")
    await sam.select_option("#status", "shipped")
    await sam.fill("#note", "with DHL")
    await sam.click("#update button")
    await expect(sam.locator("#state")).to_have_text("published")
    await expect(alice.locator("#status-now")).to_have_text("shipped")
    await expect(alice.locator("#events li")).to_have_count(1)
    await expect(alice.locator("#events li")).to_contain_text("with DHL")

    # Nothing invalid reaches the customer: a note over 200 characters is refused by name.
    await sam.fill("#note", "x" * 201)
    await sam.click("#update button")
    await expect(sam.locator("#state")).to_contain_text(
        "data.note: String should have at most 200 characters [string_too_long]"
    )
    # The backend's own route publishes a model instance through the same channel.
    cookies = {c["name"]: c["value"] for c in await sam.context.cookies()}
    async with httpx.AsyncClient(base_url=shop, cookies=cookies) as http:
        event = {"status": "delivered", "at": "2026-12-01T12:00:00Z"}
        reply = await http.post("/orders/42/events", json=event)
        assert reply.status_code == 200, reply.text
    await expect(alice.locator("#status-now")).to_have_text("delivered")
    await expect(alice.locator("#events li")).to_have_count(2)  # the refused one never came

    # A reload replays the order's history, each event once.
    await alice.reload()
    await expect(alice.locator("#state")).to_have_text("following")
    await expect(alice.locator("#events li")).to_have_count(2)
    for page in (alice, sam):
        await page.context.close()


async def test_only_staff_publish_and_customers_see_only_their_orders(
    browser: Browser, shop: str
) -> None:
    alice = await signed_in(browser, shop, "alice", "/staff/orders/43")
    await expect(alice.locator("#state")).to_have_text("following")  # her own order
    await alice.click("#update button")
    await expect(alice.locator("#state")).to_have_text("refused: forbidden: staff only")
    await alice.goto(f"{shop}/orders/7")
    await expect(alice.locator("#state")).to_have_text(
        "refused: forbidden: no permission to join 'orders:7'"
    )
    cookies = {c["name"]: c["value"] for c in await alice.context.cookies()}
    async with httpx.AsyncClient(base_url=shop, cookies=cookies) as http:
        event = {"status": "delivered", "at": "2026-12-01T12:00:00Z"}
        reply = await http.post("/orders/43/events", json=event)
        assert (reply.status_code, reply.json()) == (403, {"detail": "staff only"})
    stranger = await signed_in(browser, shop, None, "/orders/42")
    await expect(stranger.locator("#state")).to_have_text("refused: forbidden: sign in first")
    for page in (alice, stranger):
        await page.context.close()
