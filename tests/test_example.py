"""The library-mode example app (examples/notifications.py), end to end under uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from examples import notifications
from tests.support import connect, serve_in_process


@pytest.fixture
async def shop() -> AsyncIterator[str]:
    async with serve_in_process(notifications.app) as address:
        yield address


async def test_http_handlers_push_to_websocket_clients(shop: str) -> None:
    async with (
        connect(f"ws://{shop}", "ann") as ann,
        connect(f"ws://{shop}", "ann") as ann_tab,
        httpx.AsyncClient(base_url=f"http://{shop}") as http,
    ):
        await ann.join("orders:42")
        reply = await http.post("/orders/42/ship", json={"carrier": "DHL"})
        assert reply.json() == {"offset": 1}
        (msg,) = await ann.messages(1)
        assert (msg["from"], msg["data"]) == (None, {"status": "shipped", "carrier": "DHL"})
        assert (await http.post("/users/ann/notify", json={"text": "hi"})).status_code == 204
        for tab in (ann, ann_tab):
            assert (await tab.expect("direct"))["data"] == {"note": "hi"}
        # The ordinary routes keep their own validation.
        assert (await http.post("/orders/42/ship", json={})).status_code == 422


async def test_hooks_validate_transform_and_authorize(shop: str) -> None:
    async with connect(f"ws://{shop}", "bo") as bo, connect(f"ws://{shop}", "cy") as cy:
        await cy.join("chat:lobby")
        ack = await bo.publish("chat:lobby", {"text": "  hello  "})
        (msg,) = await cy.messages(1)
        assert msg["offset"] == ack["offset"]
        assert msg["data"] == {"text": "hello", "by": "bo"}  # trimmed and signed by on_publish
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "publish", "channel": "chat:lobby", "data": "plain"}, "bad_request"),
            ({"type": "publish", "channel": "chat:lobby", "data": {"text": " "}}, "bad_request"),
            (
                {"type": "publish", "channel": "chat:lobby", "data": {"text": "BUY CHEAP"}},
                "forbidden",
            ),
            ({"type": "publish", "channel": "orders:42", "data": {"text": "x"}}, "forbidden"),
            ({"type": "join", "channel": "user:cy"}, "forbidden"),
        ]
        for frame, code in cases:
            reply = await bo.request(frame)
            assert (reply["type"], reply["code"]) == ("error", code), frame
        refused = await bo.request(cases[2][0])
        assert refused["message"] == "no advertising in the chat"
        assert (await bo.join("user:bo"))["type"] == "joined"
        assert (await bo.join("orders:7"))["type"] == "joined"


async def test_connect_and_disconnect_hooks(shop: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{shop}") as http:
        async with connect(f"ws://{shop}", "dee"), connect(f"ws://{shop}", "dee"):
            assert "dee" in (await http.get("/online")).json()["users"]
            assert notifications.online["dee"] == 2
        for _ in range(100):  # the server notices the close a moment later
            if "dee" not in json.loads((await http.get("/online")).text)["users"]:
                break
            await asyncio.sleep(0.02)
        assert "dee" not in (await http.get("/online")).json()["users"]
