"""``POST /sse/frame`` on real `wshub serve` processes: the client frames of an SSE stream's
holder, with the identity, permissions and rate limit a WebSocket client has."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, token
from tests.sse_support import sse
from tests.support import ServerProcess, connect


async def _post(base: str, frame: Any, **query: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        content = frame if isinstance(frame, str) else None
        response = await client.post(
            f"{base}/sse/frame",
            params=query,
            content=content,
            json=None if content is not None else frame,
        )
    return response.status_code, response.json()


async def test_publish_send_presence_and_history_answer_like_on_ws(
    server: ServerProcess,
) -> None:
    channel = f"f:{uuid.uuid4().hex[:8]}"
    async with sse(server.http, channel, user="sam") as stream, connect(server.url, "ws") as ws:
        await stream.until("joined")
        status, ack = await _post(
            server.http, {"type": "publish", "id": 7, "channel": channel, "data": 1}, user="sam"
        )
        assert (status, ack["type"], ack["id"], ack["offset"]) == (200, "ack", 7, 1)
        (message,) = await stream.messages(1)
        assert (message.data["from"], message.data["data"]) == ("sam", 1)
        status, ack = await _post(
            server.http, {"type": "send", "id": "s", "to": "ws", "data": "hi"}, user="sam"
        )
        assert (status, ack) == (200, {"type": "ack", "id": "s"})
        direct = await ws.expect("direct")
        assert (direct["from"], direct["data"]) == ("sam", "hi")
        status, presence = await _post(
            server.http, {"type": "presence", "id": 1, "channel": channel}, user="sam"
        )
        assert [m["user"] for m in presence["members"]] == ["sam"]
        status, history = await _post(
            server.http, {"type": "history", "id": 2, "channel": channel}, user="sam"
        )
        assert [m["data"] for m in history["messages"]] == [1]
        # A direct message to the stream's user arrives on the stream.
        await ws.request({"type": "send", "to": "sam", "data": "back"})
        assert (await stream.until("direct")).data["data"] == "back"


async def test_errors_carry_the_status_of_their_code(server: ServerProcess) -> None:
    assert (await _post(server.http, "{nope"))[0] == 400
    status, reply = await _post(server.http, {"type": "join", "id": 1, "channel": "a"})
    assert (status, reply["code"], reply["id"]) == (400, "unknown_type", 1)
    status, reply = await _post(server.http, {"type": "publish", "id": 2, "channel": "a"})
    assert (status, reply["code"]) == (400, "bad_request")  # no data


async def test_identity_and_permissions_as_for_the_stream(make_server: ServerFactory) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    frame = {"type": "publish", "id": 1, "channel": "chat:a", "data": 1}
    assert (await _post(node.http, frame))[1]["code"] == "unauthorized"
    assert (await _post(node.http, frame, token="forged"))[0] == 401
    reader = token("ann", publish=[])
    status, reply = await _post(node.http, frame, token=reader)
    assert (status, reply["code"]) == (403, "forbidden")
    writer = token("bob", publish=["chat:*"])
    assert (await _post(node.http, frame, token=writer))[1]["type"] == "ack"


async def test_the_rate_limit_is_the_users_across_requests(make_server: ServerFactory) -> None:
    node = make_server("--rate-limit", "3")
    frame = {"type": "history", "id": 1, "channel": "a"}
    # At once, so that a loaded machine cannot spread them out below the rate.
    replies = await asyncio.gather(*(_post(node.http, frame, user="fast") for _ in range(12)))
    statuses = sorted(status for status, _ in replies)
    assert statuses.count(200) >= 3 and statuses[-1] == 429
    # Another user has a limit of their own.
    assert (await _post(node.http, frame, user="other"))[0] == 200
