"""wshub as a library: a hub mounted next to a shop's ordinary routes.

Browsers connect to ``/ws?user=NAME`` (open mode: put your own authentication in front, or
see docs/library.md for JWT), join ``orders:<id>`` to follow an order and ``chat:*`` to talk.
The shop's backend pushes from its own HTTP handlers with ``hub.publish`` and ``hub.send``.

Run it with ``uvicorn examples.notifications:app`` from the repository root.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from wshub import BadRequest, Forbidden, Hub, Settings

online: dict[str, int] = {}
"""Connections per user, kept by the on_connect / on_disconnect hooks."""


async def authorize(user: str, action: str, channel: str) -> bool:
    """Clients follow orders and their own channel, and may talk only in ``chat:*``."""
    if channel.startswith("orders:") or channel == f"user:{user}":
        return action == "join"  # only the shop publishes there
    return channel.startswith("chat:")


async def on_publish(user: str, channel: str, data: Any) -> Any:
    """Chat messages are ``{"text": ...}``; the server trims them and signs them."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise BadRequest('a chat message is {"text": "..."}')
    text = data["text"].strip()
    if not text:
        raise BadRequest("an empty message")
    if "buy cheap" in text.lower():
        raise Forbidden("no advertising in the chat")
    return {"text": text[:500], "by": user}


async def on_connect(user: str, session: str) -> None:
    online[user] = online.get(user, 0) + 1


async def on_disconnect(user: str, session: str) -> None:
    left = online.get(user, 0) - 1
    if left > 0:
        online[user] = left
    else:
        online.pop(user, None)


hub = Hub(
    "memory://",
    Settings(max_connections=1000, rate_limit=20),
    authorize=authorize,
    on_publish=on_publish,
    on_connect=on_connect,
    on_disconnect=on_disconnect,
)
app = FastAPI(title="A shop with live notifications")
app.include_router(hub.router)  # /ws and /ws/{client_id}; starts and stops the hub


class Shipment(BaseModel):
    carrier: str = Field(min_length=1, max_length=40)


class Note(BaseModel):
    text: str = Field(min_length=1, max_length=500)


@app.get("/online")
async def who_is_online() -> dict[str, list[str]]:
    return {"users": sorted(online)}


@app.post("/orders/{order_id}/ship")
async def ship(order_id: int, shipment: Shipment) -> dict[str, int]:
    """Mark an order shipped: everyone following it sees it at once."""
    offset = await hub.publish(
        f"orders:{order_id}", {"status": "shipped", "carrier": shipment.carrier}
    )
    return {"offset": offset}


@app.post("/users/{user}/notify", status_code=204)
async def notify(user: str, note: Note) -> None:
    """A private note to every open tab of one user."""
    await hub.send(user, {"note": note.text})
