"""The Python client's side of a channel route: ``subscribe(channel, model=...)`` yields
instances of the model, against uvicorn running a hub with that route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from tests.channel_app import Line, OrderEvent, Status, event
from tests.support import serve_in_process
from wshub import Hub
from wshub.client import Client


class Other(BaseModel):
    price: float


@pytest.fixture
async def served() -> AsyncIterator[tuple[Hub, str]]:
    hub = Hub("memory://")
    hub.channel("orders:{order_id}", model=OrderEvent)
    app = FastAPI()
    app.include_router(hub.router)
    async with serve_in_process(app) as address:
        yield hub, f"ws://{address}"


async def test_subscribe_with_a_model_yields_its_instances(served: tuple[Hub, str]) -> None:
    hub, url = served
    async with Client(url, user="alice") as alice:
        events = alice.subscribe("orders:1", model=OrderEvent)
        lines = alice.subscribe("orders:1", model=Other)  # a model the server does not use
        await alice.join("orders:1")
        await hub.publish("orders:1", event(lines=[{"sku": "tea", "qty": 2}]))
        got = await asyncio.wait_for(anext(events), 5)
        assert got == OrderEvent(
            status=Status.shipped,
            at=datetime(2026, 12, 1, 10, tzinfo=UTC),
            lines=[Line(sku="tea", qty=2)],
        )
        assert isinstance(got.at, datetime) and got.status is Status.shipped
        assert events.last is not None and (events.last.offset, events.last.sender) == (1, None)
        with pytest.raises(ValidationError, match="price"):
            await asyncio.wait_for(anext(lines), 5)
        lines.close()
        await alice.publish("orders:1", event(status="delivered"))
        assert (await asyncio.wait_for(anext(events), 5)).status is Status.delivered
        assert events.last is not None and events.last.sender == "alice"
        events.close()
