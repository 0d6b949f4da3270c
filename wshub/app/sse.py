"""``GET /sse``: the hub's stream over Server-Sent Events, for clients without a WebSocket.

The stream is an ordinary connection of the hub (:class:`~wshub.transport.sse.SseSocket` is
its socket), so everything a WebSocket client gets applies: admission and the connection caps,
permissions and the ``authorize`` hook, the bounded queue and the slow-consumer rule, the
drain on shutdown. What differs is only before and around it: the client's channels come in
the query string, every refusal is an HTTP status before the stream starts (an ``EventSource``
can read none of them, but any other client can), and ``Last-Event-ID`` resumes every channel
as ``join`` with ``since`` does.

The response is sse-starlette's: its heartbeat comments, its watch for the client going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from fastapi import Query, Request
from fastapi.responses import PlainTextResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from wshub import protocol
from wshub.brokers.base import BrokerUnavailable
from wshub.core.auth import Identity
from wshub.core.connection import Connection
from wshub.core.hooks import BadRequest, Forbidden
from wshub.core.server_subscriptions import Reason
from wshub.protocol import CloseCode
from wshub.protocol.event_id import Position, parse_event_id
from wshub.transport.handshake import Handshake, Refusal, refusal_for
from wshub.transport.sse import ABORT, SseSocket

if TYPE_CHECKING:
    from wshub.app.hub import Hub

__all__ = ["sse_endpoint"]

log = logging.getLogger("wshub.app.server")


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


def _refused(hub: Hub, request: Request, refusal: Refusal) -> Response:
    log.info(
        "sse refused",
        extra={
            "event": "refused",
            "status": refusal.status,
            "reason": refusal.reason,
            "path": request.url.path,
        },
    )
    hub.metrics.handshake_refused(refusal.status)
    headers = {"Cache-Control": "no-store"}
    if refusal.retry_after is not None:
        headers["Retry-After"] = str(max(1, refusal.retry_after))
    return PlainTextResponse(refusal.reason + "\n", refusal.status, headers=headers)


def _resume_from(request: Request) -> dict[str, Position]:
    """The positions of ``Last-Event-ID`` (or ``?last_event_id=``); none for a bad one."""
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return (parse_event_id(text) if text else None) or {}


class _Stream(EventSourceResponse):
    """The stream of one admitted connection; its end detaches and releases it."""

    def __init__(
        self,
        hub: Hub,
        conn: Connection,
        socket: SseSocket,
        joins: list[tuple[str, str]],
        user: str,
        dropped: list[tuple[str, Reason]],
    ) -> None:
        super().__init__(
            socket.events(),
            headers={"Cache-Control": "no-cache"},
            ping=hub.settings.ping_interval or 0,
            ping_message_factory=_ping,
            sep="\n",
        )
        self._hub = hub
        self._conn = conn
        self._joins = joins
        self._user = user
        self._dropped = dropped

    async def _open(self) -> None:
        """Greet, then join each channel: in a task, while the events already flow out."""
        hub, conn = self._hub, self._conn
        try:
            await hub.watch_direct(conn)
            await hub.greet(conn)
            for channel, frame in self._joins:
                await hub.handle_text(conn, frame)
                if channel not in conn.channels and not conn.closing:
                    # Its error event is out; a stream short of a channel would miss its
                    # messages without a word, so it ends, and EventSource comes back.
                    conn.close(CloseCode.INTERNAL_ERROR, f"could not join {channel}")
                    return
            # After the joins, so that this event's id already names every resumed channel
            # (an id naming none would make the next reconnect start afresh).
            for channel, reason in self._dropped:
                conn.push(protocol.encode(protocol.Unsubscribed(channel=channel, reason=reason)))
        except BrokerUnavailable:  # the stream ends; EventSource comes back by itself
            log.warning("broker unavailable: an SSE stream was ended")
            conn.close(CloseCode.INTERNAL_ERROR, "broker unavailable: reconnect later")
        except Exception:
            log.exception("could not open an SSE stream")
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, conn = self._hub, self._conn
        opening = asyncio.get_running_loop().create_task(self._open())
        try:
            await super().__call__(scope, receive, send)
        finally:
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await opening
            hub.metrics.sse_closed()
            hub.channel_routes.closed(conn)
            await hub.detach(conn, None)
            hub.release(self._user)


def sse_endpoint(hub: Hub, handshake: Handshake) -> Any:
    async def sse(
        request: Request, channel: Annotated[list[str] | None, Query()] = None
    ) -> Response:
        """The hub's stream as Server-Sent Events (`text/event-stream`): one event per server
        frame, `event:` its type and `data:` its JSON. `channel` may repeat. Identity as for
        `/ws`: `?token=`, `Authorization: Bearer`, or `?user=` in open mode. Refused before
        the stream with `400`, `401`, `403` (origin, or a channel that may not be joined: the
        body names it) or `503` with `Retry-After`. `Last-Event-ID` (or `?last_event_id=`)
        resumes every channel where that event left it."""
        channels = list(dict.fromkeys(channel or ()))
        for name in channels:
            if not protocol.is_channel_name(name):
                return _refused(hub, request, Refusal(400, f"invalid channel name: {name!r}"))
        if len(channels) > hub.settings.max_channels:
            too_many = f"more than {hub.settings.max_channels} channels"
            return _refused(hub, request, Refusal(400, too_many))
        identity = handshake.identify(request.scope)
        if isinstance(identity, Refusal):
            return _refused(hub, request, identity)
        assert isinstance(identity, Identity)
        refused = hub.admit(identity.user)
        if refused is not None:
            return _refused(hub, request, refusal_for(refused, hub.settings.retry_after))
        try:
            await hub.start()
            resume = _resume_from(request)
            extensions = request.scope.get("extensions") or {}
            socket = SseSocket(resume, extensions.get(ABORT))
            conn = hub.connect(
                identity.user,
                socket,
                permissions=identity.permissions,
                expires=identity.expires,
                peer=_peer(request),
                verifier=handshake.verifier,
                channels=identity.channels,
            )
        except BaseException:
            hub.release(identity.user)
            raise
        hub.channel_routes.opened(conn, request.scope)  # what channel checks read
        for name in channels:
            refusal = await _may_join(hub, conn, name)
            if refusal is not None:
                hub.channel_routes.closed(conn)
                await hub.detach(conn, None)
                hub.release(identity.user)
                return _refused(hub, request, refusal)
        # The token's own channels resume too, where the id names them.
        claimed = [c for c in identity.channels if c in resume and c not in channels]
        rejoined, dropped = await _placed(hub, conn, resume, channels + claimed)
        joins = [(name, _join(name, resume.get(name))) for name in channels + claimed + rejoined]
        hub.metrics.sse_opened()
        return _Stream(hub, conn, socket, joins, identity.user, dropped)

    return sse


async def _may_join(hub: Hub, conn: Connection, channel: str) -> Refusal | None:
    """Why the stream may not join ``channel`` (403, or 400 for a channel route's parameter
    that does not convert), or None. A route's refusal gives its reason, as on ``/ws``."""
    try:
        if await hub.allowed(conn, "join", channel):
            return None
    except Forbidden as exc:
        return Refusal(403, f"may not join channel {channel}: {exc}")
    except BadRequest as exc:
        return Refusal(400, f"channel {channel}: {exc}")
    return Refusal(403, f"may not join channel {channel}")


async def _placed(
    hub: Hub, conn: Connection, resume: dict[str, Position], asked: list[str]
) -> tuple[list[str], list[tuple[str, Reason]]]:
    """The channels the id names beyond ``asked``: those the server had placed the stream in
    (``POST /api/subscribe``, ``hub.subscribe``). Each is joined again where the user may join
    it, up to ``max_channels`` in all; the others are dropped with ``unsubscribed``, so that
    the client is told rather than left waiting for messages that will not come."""
    rejoined: list[str] = []
    dropped: list[tuple[str, Reason]] = []
    room = hub.settings.max_channels - len(asked)
    for name in resume:
        if name in asked:
            continue
        if await _may_join(hub, conn, name) is not None:
            dropped.append((name, "permissions"))
        elif len(rejoined) >= room:
            dropped.append((name, "server"))
        else:
            rejoined.append(name)
    return rejoined, dropped


def _join(channel: str, since: Position | None) -> str:
    frame = protocol.Join(channel=channel)
    if since is not None:
        frame.since = protocol.Since(offset=since[0], epoch=since[1])
    return msgspec.json.encode(frame).decode()


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else ""
