"""A browser's own ``EventSource`` in real headless Chromium on ``GET /sse``: it keeps
receiving across a restart of its `wshub serve` node (with Redis), and resumes with the
``Last-Event-ID`` it sends by itself, without a gap or a repeat."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from examples import token_stream
from tests.conftest import ServerFactory
from tests.support import RedisProcess, connect, free_port, http_get, serve_in_process
from tests.test_browser import ARGS, CHROMIUM
from tests.test_deploy import nginx

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # real Chromium

# window.log: every event the page's EventSource got, with the id it carried.
OPEN = """(url) => {
  window.log = [];
  window.opens = 0;
  const source = (window.source = new EventSource(url));
  source.onopen = () => { window.opens += 1; };
  for (const type of ["welcome", "joined", "message"]) {
    source.addEventListener(type, (e) => {
      window.log.push({ type, id: e.lastEventId, frame: JSON.parse(e.data) });
    });
  }
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def _messages(page: Page, count: int) -> list[Any]:
    await page.wait_for_function(
        f"window.log.filter((e) => e.type === 'message').length >= {count}", timeout=30_000
    )
    log: list[dict[str, Any]] = await page.evaluate("window.log")
    return [e["frame"]["data"] for e in log if e["type"] == "message"]


async def test_event_source_resumes_across_a_node_restart_without_gap_or_repeat(
    browser: Browser, make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url)
    other = make_server("--broker", redis.url)
    channel = f"es:{uuid.uuid4().hex[:8]}"
    page = await browser.new_page()
    await page.goto(f"{node.http}/healthz")
    await page.evaluate(OPEN, f"/sse?channel={channel}&user=reader")
    await page.wait_for_function("window.log.some((e) => e.type === 'joined')")
    async with connect(other.url, "writer") as writer:
        for n in range(5):
            await writer.publish(channel, n)
        assert await _messages(page, 5) == list(range(5))
        node.stop()
        for n in range(5, 10):  # published while the page's node is down
            await writer.publish(channel, n)
        node.start()
        await page.wait_for_function("window.opens >= 2", timeout=30_000)
        for n in range(10, 15):
            await writer.publish(channel, n)
        assert await _messages(page, 15) == list(range(15))
    log: list[dict[str, Any]] = await page.evaluate("window.log")
    joined = [e["frame"]["recovered"] for e in log if e["type"] == "joined"]
    assert joined == [False, True]
    last = [e for e in log if e["type"] == "message"][-1]
    assert last["id"] == f"{channel}~15~{last['frame']['epoch']}"
    await page.close()


async def test_the_token_stream_example_resumes_after_a_reload_without_loss_or_repeat(
    browser: Browser,
) -> None:
    async with serve_in_process(token_stream.app) as address:
        page = await browser.new_page()
        await page.goto(f"http://{address}/")
        # Mid-answer: some tokens shown, more to come.
        await page.wait_for_function(
            "document.getElementById('answer').textContent.split(' ').length > 8"
        )
        await page.reload(wait_until="commit")
        before = await page.evaluate("JSON.parse(sessionStorage.getItem('answer'))")
        assert before["done"] is False  # reloaded mid-answer
        await page.wait_for_function(
            "document.getElementById('status').textContent === 'done'", timeout=30_000
        )
        shown = await page.text_content("#answer")
        stored = await page.evaluate("JSON.parse(sessionStorage.getItem('answer'))")
        await page.close()
    assert shown == token_stream.ANSWER + " "
    assert stored["lastId"].startswith(stored["channel"] + "~")


# wshub.js with the SSE link in place of a WebSocket: the application's API is the same.
CLIENT = """async ({ channels, user }) => {
  const { WshubClient } = await import("/static/wshub.js");
  const { SseLink } = await import("/static/sse_link.js");
  window.got = [];
  const client = (window.client = new WshubClient(
    new URL("/ws", location.href.replace("http", "ws")).toString(),
    { user, WebSocket: SseLink, backoffMin: 100, backoffMax: 500 },
  ));
  client.on("message", (m) => window.got.push([m.channel, m.data]));
  await client.connect();
  for (const channel of channels) await client.join(channel);
  const offset = await client.publish(channels[0], "from the page");
  const members = await client.presence(channels[0]);
  const history = await client.history(channels[0]);
  return { offset, members: members.map((m) => m.user), history: history.messages.length };
}"""


async def test_wshub_js_over_the_sse_link_resumes_across_a_restart(
    browser: Browser, make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url)
    other = make_server("--broker", redis.url)
    one, two = (f"link:{uuid.uuid4().hex[:8]}" for _ in range(2))
    page = await browser.new_page()
    await page.goto(f"{node.http}/healthz")
    result = await page.evaluate(CLIENT, {"channels": [one, two], "user": "pat"})
    assert (result["offset"], result["members"], result["history"]) == (1, ["pat"], 1)
    async with connect(other.url, "writer") as writer:
        await writer.publish(two, "a")
        await page.wait_for_function("window.got.length >= 2")
        node.stop()
        await writer.publish(one, "b")  # while the page's node is down
        await writer.publish(two, "c")
        node.start()
        await page.wait_for_function("window.got.length >= 4", timeout=30_000)
        await writer.publish(one, "d")
        await page.wait_for_function("window.got.length >= 5", timeout=10_000)
    got = await page.evaluate("window.got")
    assert got == [[one, "from the page"], [two, "a"], [one, "b"], [two, "c"], [one, "d"]]
    assert await page.evaluate("window.client.reconnects") == 1
    await page.close()


# A proxy that passes plain HTTP but not the WebSocket upgrade (no Upgrade header goes on).
NO_UPGRADE = """
upstream wshub { server 127.0.0.1:NODE; }
server {
    listen 127.0.0.1:LISTEN;
    location / {
        proxy_pass http://wshub;
        proxy_http_version 1.1;
        proxy_buffering off;
    }
}
"""

FALLBACK = """async ({ channel }) => {
  const { WshubClient } = await import("/static/wshub.js");
  window.got = [];
  const client = (window.client = new WshubClient(
    new URL("/ws", location.href.replace("http", "ws")).toString(), { user: "kim" },
  ));
  client.on("message", (m) => window.got.push(m.data));
  await client.connect();
  await client.join(channel);
  return { offset: await client.publish(channel, "over sse"), url: client._ws.url };
}"""


async def test_wshub_js_falls_back_to_sse_behind_a_proxy_without_websockets(
    browser: Browser, make_server: ServerFactory, tmp_path: Path
) -> None:
    node = make_server()
    site = NO_UPGRADE.replace("NODE", str(node.port)).replace("LISTEN", str(free_port()))
    channel = f"fb:{uuid.uuid4().hex[:8]}"
    with nginx(site, tmp_path) as port:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/healthz")
        result = await page.evaluate(FALLBACK, {"channel": channel})
        assert result["url"].startswith(f"http://127.0.0.1:{port}/sse")
        async with connect(node.url, "writer") as writer:
            await writer.publish(channel, "from a websocket")
        await page.wait_for_function("window.got.length >= 2")
        assert await page.evaluate("window.got") == ["over sse", "from a websocket"]
        # The proxy learns to pass the upgrade; the next link is a WebSocket again.
        conf = tmp_path / "nginx.conf"
        upgrade = "proxy_set_header Upgrade $http_upgrade;\nproxy_set_header Connection upgrade;"
        conf.write_text(conf.read_text().replace("proxy_buffering off;", upgrade))
        os.kill(int((tmp_path / "nginx.pid").read_text()), signal.SIGHUP)
        node.restart()  # the stream ends; the client reconnects
        await page.wait_for_function(
            "window.client.state === 'open' && window.client._ws.url.startsWith('ws')",
            timeout=30_000,
        )
        async with connect(node.url, "writer") as writer:
            await writer.publish(channel, "over a websocket")
        await page.wait_for_function("window.got.length >= 3")
        await page.close()


async def test_the_chat_page_runs_over_sse_when_asked(
    browser: Browser, make_server: ServerFactory
) -> None:
    node = make_server()
    page = await browser.new_page()
    await page.goto(f"{node.http}/?user=lee&autoconnect=1&transport=sse")
    await expect(page.locator("#status")).to_have_class("dot open")

    async def streams() -> bytes:
        _, metrics = await http_get(f"{node.http}/metrics")
        return metrics

    # The page's join reopens its stream: the gauge settles at one once the old one is gone.
    async with asyncio.timeout(10):
        while b"wshub_sse_streams 1.0" not in await streams():
            await asyncio.sleep(0.05)
    async with connect(node.url, "ws") as ws:
        await ws.join("chat:lobby")
        await page.fill("#text", "hello over sse")
        await page.press("#text", "Enter")
        (message,) = await ws.messages(1)
    assert message["data"]["text"] == "hello over sse"
    await page.close()


async def test_the_sse_link_keeps_a_channel_the_server_placed_it_in_when_it_joins_another(
    browser: Browser, make_server: ServerFactory
) -> None:
    node = make_server(WSHUB_API_KEY="sse-link-key")
    own, placed, later = (f"pl:{uuid.uuid4().hex[:8]}" for _ in range(3))
    page = await browser.new_page()
    await page.goto(f"{node.http}/healthz")
    await page.evaluate(CLIENT, {"channels": [own], "user": "ula"})
    await page.evaluate(
        "() => { window.client.on('subscribed', (s) => window.got.push(['+', s.channel])); }"
    )
    async with httpx.AsyncClient(timeout=10) as api:
        placing = await api.post(
            f"{node.http}/api/subscribe",
            json={"user": "ula", "channel": placed},
            headers={"Authorization": "apikey sse-link-key"},
        )
    assert placing.status_code < 300, placing.text
    async with connect(node.url, "writer") as writer:
        await writer.publish(placed, "before")
        await page.wait_for_function("window.got.length >= 3")
        # The join reopens the stream; the placed channel comes along, resumed where it was.
        await page.evaluate("(c) => window.client.join(c)", later)
        await writer.publish(placed, "after")
        await page.wait_for_function("window.got.length >= 4", timeout=10_000)
        # Left, each reopens the stream: neither the joined nor the placed channel comes back.
        await page.evaluate("(c) => window.client.leave(c)", later)
        await page.evaluate("(c) => window.client.leave(c)", placed)
        await writer.publish(later, "gone")
        await writer.publish(placed, "gone")
        await writer.publish(own, "end")  # after them: once it is in, they would be too
        await page.wait_for_function("window.got.length >= 5", timeout=10_000)
    got = await page.evaluate("window.got")
    assert got == [
        [own, "from the page"],
        ["+", placed],
        [placed, "before"],
        [placed, "after"],
        [own, "end"],
    ]
    await page.close()
