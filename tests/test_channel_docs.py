"""Channel routes in the served AsyncAPI document: each with its parameters and its payload's
JSON Schema, and the whole still valid for the real npm @asyncapi/parser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect
from pydantic import BaseModel

from tests.channel_app import OrderEvent, build
from tests.support import serve_in_process
from tests.test_browser import ARGS, CHROMIUM
from tests.test_observability import VALIDATOR, asyncapi_parser  # noqa: F401  (a fixture)
from wshub import Hub
from wshub.app.channel_docs import add_routes
from wshub.protocol import asyncapi


class Message(BaseModel):
    """Named like the protocol's ``message`` frame, on purpose."""

    text: str


def validate(document: bytes, parser: Path) -> Any:
    node = shutil.which("node")
    assert node
    result = subprocess.run(
        [node, str(VALIDATOR), str(parser)], input=document, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


async def test_the_served_document_lists_every_route_and_passes_the_parser(
    asyncapi_parser: Path,  # noqa: F811
) -> None:
    hub, app = build()
    hub.channel("notes:{room}", model=Message)
    async with serve_in_process(app) as address, httpx.AsyncClient() as http:
        body = (await http.get(f"http://{address}/asyncapi.json")).content
    doc = json.loads(body)
    orders = doc["channels"]["orders.order_id"]
    assert orders["address"] == "orders:{order_id}"
    assert orders["description"].startswith("One order's events")
    assert orders["parameters"] == {"order_id": {"description": "`order_id`: integer"}}
    shop = doc["channels"]["shop.region.day"]["parameters"]
    assert shop["region"]["enum"] == ["north", "south"]
    assert shop["day"]["description"] == "`day`: date"
    schemas = doc["components"]["schemas"]
    payload = doc["components"]["messages"]["orders.order_id"]["payload"]
    assert payload == {"$ref": "#/components/schemas/data.OrderEvent"}
    event = schemas["data.OrderEvent"]
    assert event["required"] == ["status", "at"]
    assert event["properties"]["status"] == {"$ref": "#/components/schemas/data.Status"}
    assert schemas["data.Status"]["enum"] == ["placed", "shipped", "delivered"]
    assert event["properties"]["at"]["format"] == "date-time"
    assert event["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/data.Line"}
    assert schemas["data.Line"]["properties"]["qty"]["exclusiveMinimum"] == 0
    # list[Line] has no name of its own: named after its channel.
    feed = schemas["data.feed.name"]
    assert feed["items"] == {"$ref": "#/components/schemas/data.Line"}
    # A model named Message is data.Message; the protocol's message frame is untouched.
    assert schemas["data.Message"]["properties"] == {"text": {"title": "Text", "type": "string"}}
    assert "offset" in schemas["Message"]["properties"]
    ops = doc["operations"]
    assert ops["orders.order_id.publish"]["action"] == "receive"
    assert ops["orders.order_id.message"]["action"] == "send"

    report = validate(body, asyncapi_parser)
    assert report["valid"], report["diagnostics"]
    assert [d for d in report["diagnostics"] if d["severity"] <= 1] == []
    ids = {op["id"] for op in report["operations"]}
    assert {"orders.order_id.publish", "notes.room.message", "join"} <= ids


def test_a_hub_without_routes_serves_the_protocol_document_unchanged() -> None:
    assert add_routes(asyncapi.document(), Hub("memory://").channel_routes) == asyncapi.document()
    assert OrderEvent.__name__ in str(add_routes(asyncapi.document(), build()[0].channel_routes))


@pytest.mark.slow  # real Chromium
async def test_the_asyncapi_page_shows_the_routes_in_chromium() -> None:
    _, app = build()
    async with (
        serve_in_process(app) as address,
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(10_000)
            await page.goto(f"http://{address}/asyncapi")
            orders = page.locator("#channel-orders\\.order_id")
            await expect(orders).to_contain_text("orders:{order_id}")
            await expect(orders).to_contain_text("One order's events")
            await expect(orders).to_contain_text("{order_id} integer")
            shop = page.locator("#channel-shop\\.region\\.day")
            await expect(shop).to_contain_text("{region} string (one of north, south)")
            # The payload's fields, with the protocol's messages below.
            event = page.locator("#msg-data\\.OrderEvent")
            await expect(event).to_contain_text("status")
            await expect(event.locator("tr", has_text="lines")).to_contain_text("array of")
            await expect(page.locator("#msg-Message")).to_contain_text("offset")
        finally:
            await browser.close()
