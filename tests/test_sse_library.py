"""``GET /sse`` of a ``Hub`` mounted into someone's FastAPI app, under stock uvicorn."""

from __future__ import annotations

from fastapi import FastAPI

from tests.sse_support import sse
from tests.support import serve_in_process
from wshub import Hub


async def test_a_mounted_hub_streams_what_the_app_publishes() -> None:
    hub = Hub("memory://")
    app = FastAPI()
    app.include_router(hub.router)
    async with serve_in_process(app) as address, sse(f"http://{address}", "orders:1") as stream:
        joined = await stream.until("joined")
        assert joined.id is not None
        offset = await hub.publish("orders:1", {"status": "shipped"})
        (message,) = await stream.messages(1)
        assert (message.data["offset"], message.data["data"]) == (offset, {"status": "shipped"})
        assert message.id == f"orders:1~{offset}~{message.data['epoch']}"
