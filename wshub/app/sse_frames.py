"""``POST /sse/frame``: the client frames an SSE stream's holder sends, as HTTP requests.

A stream only goes one way, so a client on ``/sse`` sends ``publish``, ``send``, ``presence``
and ``history`` here: the same JSON frame as on ``/ws`` in the body, the same reply frame
back. Identity is taken as for ``/sse``; each request is served as a frame of a connection of
that user (its permissions, the ``authorize`` and ``on_publish`` hooks, the frame size limit,
the reply timeout), and the rate limit is the user's on this node, shared by their requests,
as a WebSocket client's is shared by its frames. An ``error`` reply comes with the HTTP status
that says the same thing (:data:`STATUS`).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from fastapi import Request
from fastapi.responses import Response

from wshub import protocol
from wshub.core import serving
from wshub.core.auth import Identity
from wshub.core.connection import Connection
from wshub.core.null_socket import NullSocket
from wshub.core.ratelimit import RateLimiter
from wshub.protocol import ErrorCode
from wshub.protocol.wire import SharedFrame
from wshub.transport.handshake import Handshake, Refusal

if TYPE_CHECKING:
    from wshub.app.hub import Hub

__all__ = ["HTTP_FRAMES", "STATUS", "frame_endpoint"]

HTTP_FRAMES = frozenset({"publish", "send", "presence", "history"})
"""The frames served over HTTP: the rest (``join``, ``leave``, ``ping``...) are the stream's."""

STATUS = {
    ErrorCode.BAD_JSON.value: 400,
    ErrorCode.BAD_REQUEST.value: 400,
    ErrorCode.UNKNOWN_TYPE.value: 400,
    ErrorCode.UNAUTHORIZED.value: 401,
    ErrorCode.FORBIDDEN.value: 403,
    ErrorCode.TOO_LARGE.value: 413,
    ErrorCode.RATE_LIMITED.value: 429,
    ErrorCode.INTERNAL.value: 500,
    ErrorCode.UNAVAILABLE.value: 503,
    ErrorCode.TIMEOUT.value: 504,
}
"""The HTTP status of each ``error`` code; any other reply is 200."""

MAX_LIMITERS = 10_000
"""Users whose rate limits a node remembers; the least recently seen is forgotten first."""


class _Type(msgspec.Struct, forbid_unknown_fields=False):
    type: str = ""
    id: int | str | None = None


class _Reply(Connection):
    """A connection that lives for one request: what the hub pushes is its reply."""

    __slots__ = ("replies",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replies: list[str] = []

    def start(self) -> None:
        pass

    @property
    def queued(self) -> int:
        return 0

    def push(self, text: str) -> None:
        self.replies.append(text)

    def push_frame(self, frame: SharedFrame) -> None:
        self.replies.append(frame.text)

    def _discard(self) -> None:
        pass

    def _begin_close(self) -> None:  # a flood past the rate limit: the limiter remembers it
        self.closed = True


def _reply(text: str) -> Response:
    head = msgspec.json.decode(text, type=dict[str, Any])
    status = STATUS.get(head.get("code", ""), 500) if head.get("type") == "error" else 200
    return Response(text, status, media_type="application/json")


def _error(code: ErrorCode, message: str, frame_id: int | str | None) -> Response:
    return _reply(protocol.error(code, message, frame_id))


def frame_endpoint(hub: Hub, handshake: Handshake) -> Callable[[Request], Any]:
    limiters: OrderedDict[str, RateLimiter] = OrderedDict()

    def limiter(user: str) -> RateLimiter | None:
        rate = hub.settings.rate_limit
        if rate <= 0:
            return None
        found = limiters.pop(user, None) or RateLimiter(rate, hub.clock())
        limiters[user] = found
        if len(limiters) > MAX_LIMITERS:
            limiters.popitem(last=False)
        return found

    async def frame(request: Request) -> Response:
        """Send one client frame (`publish`, `send`, `presence` or `history`) as JSON, the
        same as on `/ws`; the reply frame comes back as JSON. Identity as for `/sse`. An
        `error` reply has the status of its code: `400` (`bad_json`, `bad_request`,
        `unknown_type`), `401`, `403` (`forbidden`), `413` (`too_large`), `429`
        (`rate_limited`), `503` (`unavailable`: nothing was done), `504` (`timeout`)."""
        identity = handshake.identify(request.scope)
        if isinstance(identity, Refusal):
            code = ErrorCode.UNAUTHORIZED if identity.status == 401 else ErrorCode.FORBIDDEN
            if identity.status == 400:
                code = ErrorCode.BAD_REQUEST
            return _error(code, identity.reason, None)
        assert isinstance(identity, Identity)
        cap = hub.settings.max_frame_bytes * 16
        body = await request.body()
        if len(body) > max(cap, 1 << 20):
            return _error(ErrorCode.TOO_LARGE, "frame too large", None)
        text = body.decode(errors="replace")
        try:
            head = msgspec.json.decode(text, type=_Type)
        except msgspec.DecodeError:
            head = _Type()  # the hub answers bad_json or bad_request itself
        else:
            if head.type not in HTTP_FRAMES:
                message = "over HTTP, only publish, send, presence and history are served"
                return _error(ErrorCode.UNKNOWN_TYPE, message, head.id)
        await hub.start()
        conn = _Reply(
            secrets.token_hex(8),
            identity.user,
            NullSocket(),
            1,
            lambda _: None,
            limiter(identity.user),
            "http",
            identity.permissions,
        )
        await hub.handle_text(conn, text, serving.deadline_in(hub.settings.reply_timeout))
        if not conn.replies:  # only a frame turned away by the rate limit goes unanswered
            return _error(ErrorCode.RATE_LIMITED, "rate limit exceeded", head.id)
        return _reply(conn.replies[0])

    return frame
