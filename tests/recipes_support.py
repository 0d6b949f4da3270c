"""What docs/security.md's token recipes must do, checked the same way for each backend
(FastAPI, Django, Node): its tokens, used as a browser would against a real ``wshub serve``."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import websockets

from tests.identity_support import auth, close_code, error_code
from tests.support import Client

Get = Callable[[str], Awaitable[tuple[int, bytes]]]
"""The backend's answer (status, body) to a GET of a path, as the logged-in alice."""


def token_of(status: int, body: bytes) -> str:
    assert status == 200, (status, body)
    token = json.loads(body)["token"]
    assert isinstance(token, str)
    return token


async def backend_tokens_work(hub: str, get: Get) -> None:
    """The connection token opens a connection in the ``auth`` frame (no token in the URL),
    joins the ``channels`` claim, allows what its patterns say and nothing more, and
    refreshes; the room token joins its room; a non-member gets no room token; a room token
    opens no connection."""
    connection = token_of(*await get("/wshub/token"))
    async with websockets.connect(f"{hub}/ws", close_timeout=1) as ws:
        alice = Client(ws)
        welcome = await auth(alice, connection)
        assert (welcome["user"], welcome["id"]) == ("alice", 1)
        assert 290 < welcome["expires"] - time.time() <= 301
        subscribed = await alice.expect("subscribed")
        assert (subscribed["type"], subscribed["channel"]) == ("subscribed", "news")
        await alice.join("chat:lobby")
        ack = await alice.publish("chat:lobby", {"text": "hi"})
        (message,) = await alice.messages(1)
        assert (message["offset"], message["from"]) == (ack["offset"], "alice")
        assert await error_code(alice, {"type": "join", "channel": "ops:1"}) == "forbidden"
        assert await error_code(alice, {"type": "publish", "channel": "news", "data": 1}) == (
            "forbidden"
        )
        room = token_of(*await get("/wshub/rooms/42/token"))
        assert await error_code(alice, {"type": "join", "channel": "room:42"}) == "forbidden"
        joined = await alice.join("room:42", token=room)
        assert joined["channel"] == "room:42"
        status, _ = await get("/wshub/rooms/7/token")
        assert status == 403
        fresh = token_of(*await get("/wshub/token"))
        ack = await alice.request({"type": "refresh", "token": fresh})
        assert ack["type"] == "ack" and 290 < ack["expires"] - time.time() <= 301
        await alice.publish("chat:lobby", "after the refresh")
        (message,) = await alice.messages(1)
        assert message["data"] == "after the refresh"
    async with websockets.connect(f"{hub}/ws", close_timeout=1) as ws:
        grant = Client(ws)
        reply = await grant.request({"type": "auth", "token": room})
        assert (reply["code"], "subscription token" in reply["message"]) == ("unauthorized", True)
        assert await close_code(grant) == 4003
