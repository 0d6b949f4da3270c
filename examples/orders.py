"""Typed channels: a shop's orders, followed live by their customer, updated by staff only.

``orders:{order_id}`` is a channel route. Its model, :class:`OrderEvent`, is what every
publication must be; customers may follow their own orders, staff any order; only staff may
publish, checked by the ``staff`` dependency, the same one that guards the shop's own HTTP
route. Identity is a session cookie, as in most FastAPI apps: ``GET /login?user=NAME`` sets
it (a stand-in for your real sign-in), and the browser sends it with the WebSocket handshake.

Pages: ``/orders/{order_id}`` follows one order; ``/staff/orders/{order_id}`` updates it.

Run it with ``uvicorn examples.orders:app`` from the repository root, then open
http://127.0.0.1:8000/login?user=alice&next=/orders/42 and, in another browser profile,
http://127.0.0.1:8000/login?user=sam&next=/staff/orders/42.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Cookie, Depends, FastAPI, HTTPException, Path
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from wshub import Hub


class Status(StrEnum):
    placed = "placed"
    packed = "packed"
    shipped = "shipped"
    delivered = "delivered"


class Parcel(BaseModel):
    carrier: str = Field(min_length=1)
    tracking: str = Field(min_length=1)


class OrderEvent(BaseModel):
    """One step in an order's life, as its customer sees it."""

    status: Status
    at: datetime
    note: str | None = Field(default=None, max_length=200)
    parcel: Parcel | None = None


ORDERS: dict[int, str] = {42: "alice", 43: "alice", 7: "bob"}
"""Order id to its customer: the shop's database."""
STAFF = {"sam"}
sessions: dict[str, str] = {}
"""Session cookie to user: set by /login."""


async def current_user(session: Annotated[str | None, Cookie()] = None) -> str:
    user = sessions.get(session or "")
    if user is None:
        raise HTTPException(401, "sign in first")
    return user


async def staff(user: Annotated[str, Depends(current_user)]) -> str:
    if user not in STAFF:
        raise HTTPException(403, "staff only")
    return user


OrderId = Annotated[int, Path(ge=1, description="The order's number")]

hub = Hub("memory://")
orders = hub.channel("orders:{order_id}", model=OrderEvent, description="One order's progress.")


@orders.can_join
async def may_follow(order_id: OrderId, user: Annotated[str, Depends(current_user)]) -> bool:
    """Customers follow their own orders; staff follow any."""
    return ORDERS.get(order_id) == user or user in STAFF


@orders.can_publish
async def may_update(order_id: OrderId, user: Annotated[str, Depends(staff)]) -> bool:
    return order_id in ORDERS


app = FastAPI(title="orders")
app.include_router(hub.router)


@app.get("/login")
async def login(user: str, next: str = "/") -> RedirectResponse:
    """A stand-in for a real sign-in: a session for ``user``."""
    if not next.startswith("/"):
        next = "/"
    session = secrets.token_urlsafe(16)
    sessions[session] = user
    response = RedirectResponse(next, status_code=303)
    response.set_cookie("session", session, httponly=True, samesite="strict")
    return response


@app.post("/orders/{order_id}/events")
async def add_event(
    order_id: OrderId, event: OrderEvent, user: Annotated[str, Depends(staff)]
) -> dict[str, int]:
    """The shop's backend publishes too: the same model, validated by FastAPI here."""
    if order_id not in ORDERS:
        raise HTTPException(404, "no such order")
    return {"offset": await hub.publish(f"orders:{order_id}", event)}


@app.get("/orders/{order_id}", response_class=HTMLResponse)
async def follow_page(order_id: OrderId) -> str:
    return _page(order_id, staff=False)


@app.get("/staff/orders/{order_id}", response_class=HTMLResponse)
async def staff_page(order_id: OrderId) -> str:
    return _page(order_id, staff=True)


def _page(order_id: int, staff: bool) -> str:
    form = (
        """<form id="update"><select id="status">"""
        + "".join(f"<option>{s.value}</option>" for s in Status)
        + """</select> <input id="note" placeholder="note"> <button>publish</button></form>"""
        if staff
        else ""
    )
    return f"""<!doctype html><meta charset="utf-8"><title>Order {order_id}</title>
<h1>Order {order_id}: <span id="status-now">…</span></h1>
<p id="state">connecting</p>{form}
<ol id="events"></ol>
<script type="module">
import {{ WshubClient, defaultUrl }} from "/static/wshub.js";
const channel = "orders:{order_id}";
const $ = (id) => document.getElementById(id);
const client = new WshubClient(defaultUrl());  // the session cookie goes with the handshake
const shown = new Set();  // offsets: history and live messages may overlap after the join
const show = ({{ offset, data: event }}) => {{
  if (shown.has(offset)) return;
  shown.add(offset);
  $("status-now").textContent = event.status;
  const item = document.createElement("li");
  item.textContent = `${{event.status}} at ${{event.at}}` + (event.note ? `: ${{event.note}}` : "");
  $("events").append(item);
}};
client.on("message", (m) => {{ if (m.channel === channel) show(m); }});
try {{
  await client.connect();
  await client.join(channel);
  const {{ messages }} = await client.history(channel);
  messages.forEach(show);
  $("state").textContent = "following";
}} catch (err) {{
  $("state").textContent = `refused: ${{err.message}}`;
  client.close();
}}
$("update")?.addEventListener("submit", async (e) => {{
  e.preventDefault();
  const event = {{ status: $("status").value, at: new Date().toISOString() }};
  if ($("note").value) event.note = $("note").value;
  try {{
    await client.publish(channel, event);
    $("state").textContent = "published";
  }} catch (err) {{
    $("state").textContent = `refused: ${{err.message}}`;
  }}
}});
</script>"""
