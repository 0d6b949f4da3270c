"""Take docs/chat.png and docs/dashboard.png: a real server, real Chromium, a short chat."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import expect  # noqa: E402

from tests.support import ServerProcess  # noqa: E402
from tests.test_browser import ARGS, CHROMIUM, open_chat, say  # noqa: E402
from wshub.client import Client  # noqa: E402


async def main() -> None:
    from playwright.async_api import async_playwright

    node = ServerProcess(env={"WSHUB_API_KEY": "screenshot"}).start()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            alice = await open_chat(browser, node.http, "alice")
            await alice.set_viewport_size({"width": 1100, "height": 640})
            bob = await open_chat(browser, node.http, "bob")
            carol = await open_chat(browser, node.http, "carol")
            await say(bob, "Morning! Is the deploy still on for 10:00?")
            await say(alice, "Yes, the new build passed every check.")
            await say(carol, "I'll watch the dashboard while it rolls out.")
            await say(bob, "Great, ping me if the error rate moves.")
            await expect(alice.locator("#messages li.msg")).to_have_count(4)
            await alice.fill("#text", "On it")
            await alice.screenshot(path=str(ROOT / "docs" / "chat.png"))

            dash = await browser.new_page(viewport={"width": 1200, "height": 760})
            await dash.goto(f"{node.http}/admin")
            await dash.fill("#key", "screenshot")
            await dash.click("#sign-in")
            async with Client(node.url, user="feed") as feed:
                for second in range(20):
                    for n in range(3 + (second * 7) % 11):
                        await feed.publish("chat:lobby", {"text": f"tick {second}.{n}"})
                        await feed.publish("news:ticker", n)
                    await asyncio.sleep(1)
            await dash.screenshot(path=str(ROOT / "docs" / "dashboard.png"))
            await browser.close()
    finally:
        node.stop()


if __name__ == "__main__":
    asyncio.run(main())
