"""wshub as a library: a Hub mounted into someone's FastAPI app, under stock uvicorn.

Stock uvicorn does not offer wshub's ``close_now`` extension, so this is also the test of the
standard ASGI path that any server takes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import websockets
from fastapi import FastAPI

from tests.support import connect, http_get, serve_in_process
from wshub import Hub, Settings


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    async def authorize(user: str, action: str, channel: str) -> bool:
        return not channel.startswith("admin:") or user == "root"

    hub = Hub("memory://", Settings(max_connections=3), authorize=authorize)
    app = FastAPI()
    app.include_router(hub.router)

    @app.get("/orders/{order}/ship")
    async def ship(order: int) -> dict[str, int]:
        offset = await hub.publish(f"orders:{order}", {"status": "shipped"})
        await hub.send("alice", {"note": f"order {order} shipped"})
        return {"offset": offset}

    async with serve_in_process(app) as address:
        yield address


async def test_mounted_hub_serves_the_protocol_and_pushes_from_http(app_url: str) -> None:
    async with connect(f"ws://{app_url}", "alice") as alice:
        await alice.join("orders:42")
        status, body = await http_get(f"http://{app_url}/orders/42/ship")
        assert (status, body) == (200, b'{"offset":1}')
        (msg,) = await alice.messages(1)
        assert (msg["from"], msg["data"]) == (None, {"status": "shipped"})
        direct = await alice.expect("direct")
        assert direct["data"] == {"note": "order 42 shipped"}


async def test_caps_refuse_with_503_under_stock_uvicorn(app_url: str) -> None:
    async with connect(f"ws://{app_url}"), connect(f"ws://{app_url}"), connect(f"ws://{app_url}"):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(f"ws://{app_url}/ws"):
                pass
        assert info.value.response.status_code == 503
        assert info.value.response.headers["Retry-After"] == "1"


async def test_authorize_hook_answers_forbidden_over_the_wire(app_url: str) -> None:
    async with (
        connect(f"ws://{app_url}", "alice") as alice,
        connect(f"ws://{app_url}", "root") as root,
    ):
        for frame in (
            {"type": "join", "channel": "admin:ops"},
            {"type": "publish", "channel": "admin:ops", "data": 1},
        ):
            reply = await alice.request(frame)
            assert (reply["type"], reply["code"]) == ("error", "forbidden")
        assert (await root.join("admin:ops"))["type"] == "joined"
        assert (await alice.request({"type": "ping"}))["type"] == "pong"
