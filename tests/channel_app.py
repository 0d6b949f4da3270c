"""A shop whose channels are routes: the app that the channel route and validation tests run
under uvicorn, and the clients they connect with (the `websockets` library, not ours)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

import websockets
from fastapi import (
    Cookie,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    WebSocketException,
)
from pydantic import BaseModel, Field, field_validator

from tests.support import Client
from wshub import Hub
from wshub.app.server import create_app

API_KEY = "channel-test-key"

ORDERS = {42: "alice", 43: "alice", 7: "bob"}
"""Who placed which order."""


class Status(StrEnum):
    placed = "placed"
    shipped = "shipped"
    delivered = "delivered"


class Line(BaseModel):
    sku: str
    qty: int = Field(gt=0)


class OrderEvent(BaseModel):
    status: Status
    at: datetime
    lines: list[Line] = []
    note: str | None = None

    @field_validator("status")
    @classmethod
    def _counted(cls, status: Status) -> Status:
        validations["OrderEvent"] += 1  # how many times a publication was validated
        return status


class Region(StrEnum):
    north = "north"
    south = "south"


validations: collections.Counter[str] = collections.Counter()
calls: collections.Counter[str] = collections.Counter()
"""How many times each dependency ran, by name and user: caching per connection."""
closed: dict[str, asyncio.Event] = {}
"""Set when a connection's ``yield`` dependency is closed."""


async def current_user(x_user: Annotated[str | None, Header()] = None) -> str:
    if x_user is None:
        raise HTTPException(401, "who are you? send X-User")
    calls[f"current_user:{x_user}"] += 1
    return x_user


async def not_banned(x_user: Annotated[str | None, Header()] = None) -> None:
    if x_user == "mallory":  # as a FastAPI WebSocket route's dependency refuses
        raise WebSocketException(1008, "banned")


async def staff(
    user: Annotated[str, Depends(current_user)], x_role: Annotated[str, Header()] = ""
) -> str:
    calls[f"staff:{user}"] += 1
    if x_role != "staff":
        raise HTTPException(403, {"reason": "staff only", "user": user})
    return user


async def order_of(order_id: int, user: Annotated[str, Depends(current_user)]) -> int:
    """Reads the pattern's parameter: runs for each check, not once per connection."""
    calls[f"order_of:{user}:{order_id}"] += 1
    return order_id


async def audit(user: Annotated[str, Depends(current_user)]) -> AsyncIterator[str]:
    try:
        yield user
    finally:
        closed.setdefault(user, asyncio.Event()).set()


def fresh(x_pass: Annotated[str | None, Header()] = None) -> int:
    """Not cached at all: runs for every check (a plain function, in the thread pool)."""
    calls[f"fresh:{x_pass}"] += 1
    return calls[f"fresh:{x_pass}"]


def build() -> tuple[Hub, FastAPI]:
    async def authorize(user: str, action: str, channel: str) -> bool:
        return not channel.startswith("admin:")

    hub = Hub("memory://", authorize=authorize)
    orders = hub.channel("orders:{order_id}", model=OrderEvent, description="One order's events")

    @orders.can_join
    async def may_follow(
        order_id: Annotated[int, Depends(order_of)],
        user: Annotated[str, Depends(current_user)],
        watcher: Annotated[str, Depends(audit)],
        _: Annotated[None, Depends(not_banned)],
    ) -> bool:
        return ORDERS.get(order_id) == user

    @orders.can_publish
    async def may_update(order_id: int, user: Annotated[str, Depends(staff)]) -> bool:
        return order_id in ORDERS

    shops = hub.channel("shop:{region}:{day}")

    @shops.can_join
    def may_visit(  # a plain function: run in the thread pool, as FastAPI runs one
        region: Region,
        day: date,
        tenant: Annotated[str, Query()] = "",
        session: Annotated[str | None, Cookie()] = None,
    ) -> bool:
        return tenant == "acme" and session == "s3cret" and day.year >= 2026

    hub.channel("feed:{name}", model=list[Line])  # a model, no checks: authorize decides
    vips = hub.channel("vip:{level}")

    @vips.can_join
    async def may_enter(
        level: Annotated[int, Path(ge=1)],
        x_pass: Annotated[str, Header()],
        nonce: Annotated[int, Depends(fresh, use_cache=False)],
    ) -> bool:
        return x_pass == "gold"

    return hub, create_app(hub, api_key=API_KEY)


@contextlib.asynccontextmanager
async def connect(
    base: str, headers: dict[str, str] | None = None, **query: str
) -> AsyncIterator[Client]:
    url = f"{base}/ws" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    async with websockets.connect(url, additional_headers=headers, close_timeout=1) as ws:
        client = Client(ws)
        client.welcome = await client.expect("welcome")
        yield client


def as_user(user: str, role: str = "") -> dict[str, str]:
    return {"X-User": user, **({"X-Role": role} if role else {})}


def event(**changes: Any) -> dict[str, Any]:
    return {"status": "shipped", "at": "2026-12-01T10:00:00Z", **changes}


@contextlib.contextmanager
def counting() -> Iterator[collections.Counter[str]]:
    calls.clear()
    validations.clear()
    yield calls
