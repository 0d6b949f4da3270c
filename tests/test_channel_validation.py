"""A channel route's model on every path in: a client's ``publish``, ``hub.publish`` and
``POST /api/publish``, over real sockets against uvicorn. Nothing invalid is delivered: each
test ends with a valid publication, and the subscriber's next message must be that one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.channel_app import (
    API_KEY,
    Line,
    OrderEvent,
    Status,
    as_user,
    build,
    connect,
    counting,
    event,
    validations,
)
from tests.support import Client, serve_in_process
from wshub import Hub, InvalidData


@pytest.fixture
async def shop() -> AsyncIterator[tuple[Hub, str]]:
    hub, app = build()
    async with serve_in_process(app) as address:
        yield hub, address


async def next_data(client: Client) -> tuple[int, Any]:
    (msg,) = await client.messages(1)
    return msg["offset"], msg["data"]


BAD: list[tuple[Any, str]] = [
    ({"at": "2026-12-01T10:00:00Z"}, "data.status: Field required [missing]"),
    (
        event(status="lost"),
        "data.status: Input should be 'placed', 'shipped' or 'delivered' [enum]",
    ),
    (event(at="tomorrow"), "data.at: Input should be a valid datetime or date"),
    (event(lines=[{"sku": "a", "qty": 0}]), "data.lines.0.qty: Input should be greater than 0"),
    (event(lines=[{"qty": 1}]), "data.lines.0.sku: Field required [missing]"),
    (event(lines="many"), "data.lines: Input should be a valid array [list_type]"),
    (event(note=5), "data.note: Input should be a valid string [string_type]"),
    (5, "data: Input should be an object [model_type]"),
    (None, "data: Input should be an object [model_type]"),
]


async def test_a_client_publication_is_validated_and_delivered_as_the_model(
    shop: tuple[Hub, str],
) -> None:
    _, address = shop
    base = f"ws://{address}"
    async with (
        connect(base, as_user("alice")) as alice,
        connect(base, as_user("dave", "staff")) as dave,
    ):
        await alice.join("orders:42")
        for data, says in BAD:
            reply = await dave.request({"type": "publish", "channel": "orders:42", "data": data})
            assert (reply["type"], reply["code"]) == ("error", "bad_request"), data
            assert reply["message"].startswith("invalid data for channel 'orders:42': ")
            assert says in reply["message"], (data, reply["message"])
            assert reply["id"] == dave._next_id
        both = await dave.request(
            {"type": "publish", "channel": "orders:42", "data": {"lines": [{"sku": 1}]}}
        )
        assert "data.status: Field required" in both["message"]
        assert "data.lines.0.sku: Input should be a valid string" in both["message"]
        assert "data.lines.0.qty: Field required" in both["message"]
        ack = await dave.publish("orders:42", event(at="2026-12-01T11:00:00+01:00", lines=[]))
        assert ack["offset"] == 1  # none of the invalid ones took an offset
        # Delivered as the model's JSON: the datetime normalised, the defaults filled in.
        assert await next_data(alice) == (
            1,
            {"status": "shipped", "at": "2026-12-01T11:00:00+01:00", "lines": [], "note": None},
        )


async def test_validation_runs_once_per_publication_not_per_subscriber(
    shop: tuple[Hub, str],
) -> None:
    hub, address = shop
    base = f"ws://{address}"
    async with (
        connect(base, as_user("alice")) as one,
        connect(base, as_user("alice")) as two,
        connect(base, as_user("alice")) as three,
        connect(base, as_user("dave", "staff")) as dave,
    ):
        for client in (one, two, three):
            await client.join("orders:43")
        with counting():
            await dave.publish("orders:43", event())
            await hub.publish("orders:43", event(status="delivered"))
            for client in (one, two, three):
                assert [m["offset"] for m in await client.messages(2)] == [1, 2]
            assert validations["OrderEvent"] == 2


async def test_hub_publish_takes_a_model_instance_or_its_json_and_refuses_invalid_data(
    shop: tuple[Hub, str],
) -> None:
    hub, address = shop
    async with connect(f"ws://{address}", as_user("alice")) as alice:
        await alice.join("orders:42")
        placed = OrderEvent(
            status=Status.placed,
            at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
            lines=[Line(sku="tea", qty=2)],
        )
        assert await hub.publish("orders:42", placed) == 1
        assert await next_data(alice) == (
            1,
            {
                "status": "placed",
                "at": "2026-12-01T09:30:00Z",
                "lines": [{"sku": "tea", "qty": 2}],
                "note": None,
            },
        )
        with pytest.raises(InvalidData) as info:
            await hub.publish("orders:42", {"status": "lost"})
        assert info.value.errors == [
            {
                "type": "enum",
                "loc": ["data", "status"],
                "msg": "Input should be 'placed', 'shipped' or 'delivered'",
            },
            {"type": "missing", "loc": ["data", "at"], "msg": "Field required"},
        ]
        assert isinstance(info.value, ValueError)
        with pytest.raises(InvalidData, match=r"data\.0\.qty"):
            await hub.publish("feed:news", [{"sku": "a", "qty": -1}])
        assert await hub.publish("orders:42", event(note="on its way")) == 2
        assert await next_data(alice) == (2, event(lines=[], note="on its way"))
        assert await hub.publish("chat:lobby", {"anything": [1, 2]}) == 1  # no route: any JSON


async def test_the_http_api_answers_422_naming_the_field(shop: tuple[Hub, str]) -> None:
    _, address = shop
    auth = {"Authorization": f"apikey {API_KEY}"}
    async with (
        connect(f"ws://{address}", as_user("alice")) as alice,
        httpx.AsyncClient(base_url=f"http://{address}", headers=auth, timeout=10) as api,
    ):
        await alice.join("orders:42")
        for data, says in BAD:
            reply = await api.post("/api/publish", json={"channel": "orders:42", "data": data})
            assert reply.status_code == 422, (data, reply.text)
            (error,) = reply.json()["detail"]
            assert error["loc"][:2] == ["body", "data"]
            assert set(error) == {"type", "loc", "msg"}  # the input is not echoed
            field = says.split(":")[0].removeprefix("data")
            assert ".".join(str(p) for p in error["loc"][2:]) == field.removeprefix(".")
        reply = await api.post(
            "/api/publish", json={"channel": "orders:42", "data": event(lines=[{"sku": "x"}])}
        )
        assert reply.json()["detail"] == [
            {"type": "missing", "loc": ["body", "data", "lines", 0, "qty"], "msg": "Field required"}
        ]
        ok = await api.post("/api/publish", json={"channel": "orders:42", "data": event()})
        assert (ok.status_code, ok.json()["offset"]) == (200, 1)
        assert await next_data(alice) == (1, event(lines=[], note=None))


async def test_what_on_publish_returns_is_what_is_validated() -> None:
    async def on_publish(user: str, channel: str, data: Any) -> Any:
        return {"status": data.pop("s"), **data}  # a shorthand the hook expands

    hub = Hub("memory://", on_publish=on_publish)
    hub.channel("orders:{order_id}", model=OrderEvent)
    app = FastAPI()
    app.include_router(hub.router)
    async with serve_in_process(app) as address, connect(f"ws://{address}", user="sam") as sam:
        await sam.join("orders:1")
        bad = await sam.request(
            {"type": "publish", "channel": "orders:1", "data": {"s": "lost", "at": "2026-12-01"}}
        )
        assert "data.status: Input should be 'placed', 'shipped' or 'delivered'" in bad["message"]
        await sam.publish("orders:1", {"s": "placed", "at": "2026-12-01T00:00:00Z"})
        assert await next_data(sam) == (
            1,
            event(status="placed", at="2026-12-01T00:00:00Z", lines=[], note=None),
        )
