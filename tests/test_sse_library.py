"""``GET /sse`` of a ``Hub`` mounted into someone's FastAPI app, under stock uvicorn."""

from __future__ import annotations

from fastapi import FastAPI

from tests import channel_app
from tests.sse_support import refused, sse
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


async def test_a_channel_routes_check_reads_the_streams_own_request() -> None:
    """The route's dependencies see the headers of the ``GET /sse`` that opened the stream."""
    hub, app = channel_app.build()
    async with serve_in_process(app) as address:
        base = f"http://{address}"
        async with sse(base, "orders:42", headers=channel_app.as_user("alice")) as stream:
            assert (await stream.until("joined")).data["channel"] == "orders:42"
            offset = await hub.publish("orders:42", channel_app.event())
            (message,) = await stream.messages(1)
            assert message.data["offset"] == offset
        refused_one = await refused(base, "orders:42", headers=channel_app.as_user("bob"))
        assert refused_one.status_code == 403
        assert "orders:42" in refused_one.text
