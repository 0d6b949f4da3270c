"""The hub's WebSocket endpoints, as raw ASGI callables, and the router that mounts them.

The two endpoints are raw ASGI callables rather than FastAPI functions: the hub needs the
handshake before the upgrade (to refuse with an HTTP status), the raw text of each frame, and a
send that skips per-message wrapper checks on the hot path. They translate: a
:class:`~wshub.transport.handshake.Refusal` (the hub's reasons mapped to statuses) before the
upgrade, then every frame into a hub call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response
from starlette.routing import WebSocketRoute

from wshub.app import browser_routes, chat
from wshub.app.asgi_socket import AsgiSocket
from wshub.app.first_frame import identify_in_band, refuse_after_auth
from wshub.app.sse import sse_endpoint
from wshub.app.sse_frames import frame_endpoint
from wshub.brokers.base import BrokerUnavailable
from wshub.core.admission import UNIDENTIFIED
from wshub.core.auth import Identity
from wshub.core.connection import Connection, Socket
from wshub.core.serving import FrameLine
from wshub.protocol import CloseCode, FrameId
from wshub.transport.handshake import Handshake, Refusal, refusal_for

if TYPE_CHECKING:
    from wshub.app.hub import Hub

__all__ = ["AsgiSocket", "Receive", "Scope", "Send", "build_router", "peer_of", "refuse"]

log = logging.getLogger("wshub.app.server")  # the server's log, as it always was

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def peer_of(scope: Scope) -> str:
    """``host:port`` of the client as the server saw it (a proxy's address behind one)."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def log_refusal(scope: Scope, refusal: Refusal) -> None:
    """A refusal is normal operation (a bad token, a full node), so it is one INFO line with
    the status and the reason, and the path without its query string, where a token may
    travel."""
    log.info(
        "handshake refused",
        extra={
            "event": "refused",
            "status": refusal.status,
            "reason": refusal.reason,
            "peer": peer_of(scope),
            "path": scope.get("path", ""),
        },
    )


async def refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    """Refuse a WebSocket handshake with an HTTP status, before any upgrade (logged by
    :func:`log_refusal`)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        # The server cannot send a denial response; closing before accept is refused as 403.
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.reason})
        return
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if refusal.retry_after is not None:
        headers.append((b"retry-after", str(max(1, refusal.retry_after)).encode()))
    await send(
        {"type": "websocket.http.response.start", "status": refusal.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": refusal.reason.encode() + b"\n"})


class _Endpoint:
    """One WebSocket endpoint's life of a connection: identify the client and count it in
    before the upgrade (refusing with an HTTP status), accept, then feed the hub every frame
    until the client goes. Subclasses say who the client is and what its frames mean."""

    kind = "ws"

    def __init__(self, hub: Hub, handshake: Handshake) -> None:
        self.hub = hub
        self.handshake = handshake

    def identify(self, scope: Scope) -> Identity | Refusal | None:
        """Who the client is, why it is refused, or None: it says in its ``auth`` frame."""
        return self.handshake.identify(scope)

    async def opened(self, conn: Connection, answering: FrameId | None) -> None:
        """The connection is open; ``answering``: the ``auth`` frame that identified it."""

    async def text(self, conn: Connection, text: str, deadline: float | None) -> None: ...

    def binary(self, conn: Connection) -> None: ...

    async def closed(self, conn: Connection, code: int | None) -> None:
        await self.hub.detach(conn, code)

    async def _open(self, conn: Connection, answering: FrameId | None) -> None:
        try:
            await self.opened(conn, answering)
        except BrokerUnavailable:  # the chat cannot join its broadcast: come back later
            log.warning("broker unavailable: a %s connection was closed with 1011", self.kind)
            conn.close(CloseCode.INTERNAL_ERROR, "broker unavailable: reconnect later")
        except Exception:
            log.exception("could not open a %s connection", self.kind)
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")

    # --- the steps, shared by the ASGI path and wshub's own transport ----------------------

    @property
    def close_timeout(self) -> float:
        return self.hub.settings.close_timeout

    @property
    def ready(self) -> bool:
        """The hub is started: a connection can be opened without waiting."""
        return self.hub.serving

    async def start(self) -> None:
        await self.hub.start()

    def admit(self, scope: Scope) -> Admitted | Refusal:
        """Who the client is (None: it says in its ``auth`` frame), counted in; or why it is
        refused, logged and counted. An :class:`Admitted` is released by its session's end
        (or by :meth:`release` when no session follows)."""
        hub = self.hub
        identity = self.identify(scope)
        user = identity.user if isinstance(identity, Identity) else UNIDENTIFIED
        if isinstance(identity, Refusal):
            refusal: Refusal | None = identity
        else:
            refused = hub.admit(user)
            refusal = None if refused is None else refusal_for(refused, hub.settings.retry_after)
        if refusal is not None:
            hub.metrics.handshake_refused(refusal.status)
            log_refusal(scope, refusal)
            return refusal
        assert not isinstance(identity, Refusal)
        return Admitted(identity, user)

    def release(self, admitted: Admitted) -> None:
        self.hub.release(admitted.user)

    async def authenticate(self, receive: Receive, send: Send, admitted: Admitted) -> bool:
        """Wait for the ``auth`` frame of a connection admitted without a token; True: it is
        identified and counted again as its user (``admitted`` says who now). False: it is
        over, and ``admitted`` holds nothing to release."""
        verifier = self.handshake.verifier
        assert verifier is not None  # identify() says None only with auth configured
        hub = self.hub
        try:
            identified = await identify_in_band(
                receive, send, verifier, hub.settings, hub.awaiting_auth
            )
        except BaseException:
            self.release(admitted)
            raise
        # Counted again as the user it turned out to be: the node's count is unchanged, the
        # user's own cap applies now.
        self.release(admitted)
        if identified is None:
            return False
        identity, answering = identified
        refused = hub.admit(identity.user)
        if refused is not None:
            await refuse_after_auth(send, refused.reason, answering)
            return False
        admitted.identity, admitted.user, admitted.answering = identity, identity.user, answering
        return True

    def open(self, socket: Socket, scope: Scope, admitted: Admitted) -> Session:
        """The hub's connection for an identified client, and the line serving its frames."""
        identity = admitted.identity
        assert identity is not None
        try:
            conn = self.hub.connect(
                identity.user,
                socket,
                self.kind,
                permissions=identity.permissions,
                expires=identity.expires,
                peer=peer_of(scope),
                verifier=self.handshake.verifier,
                channels=identity.channels,
            )
        except BaseException:
            self.release(admitted)
            raise
        self.hub.channel_routes.opened(conn, scope)  # what channel checks read
        return Session(self, conn, admitted.user, admitted.answering)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        admitted = self.admit(scope)
        if isinstance(admitted, Refusal):
            await refuse(scope, send, admitted)
            return
        try:
            await self.start()
            await send({"type": "websocket.accept"})
        except BaseException:
            self.release(admitted)
            raise
        if admitted.identity is None and not await self.authenticate(receive, send, admitted):
            return
        session = self.open(AsgiSocket(scope, send, self.close_timeout), scope, admitted)
        code: int | None = None
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    await session.line.put(message.get("text"))
                elif kind == "websocket.disconnect":
                    code = message.get("code")
                    break
        finally:
            await session.end(code)


class Admitted:
    """A client counted in before its upgrade: who it is (None until its ``auth`` frame), the
    user it is counted as, and the ``auth`` frame that identified it."""

    __slots__ = ("answering", "identity", "user")

    def __init__(self, identity: Identity | None, user: str) -> None:
        self.identity = identity
        self.user = user
        self.answering: FrameId | None = None


class Session:
    """One open connection's serving: its frames go to the line, in order, and its end
    detaches it from the hub and counts it out. What a live connection keeps, no more."""

    __slots__ = ("_endpoint", "_user", "conn", "line")

    def __init__(
        self, endpoint: _Endpoint, conn: Connection, user: str, answering: FrameId | None
    ) -> None:
        self._endpoint = endpoint
        self._user = user
        self.conn = conn

        async def serve(text: str | None, deadline: float | None) -> None:
            if text is None:
                endpoint.binary(conn)
            else:
                await endpoint.text(conn, text, deadline)

        # Frames are served in order by the line's task, so that the transport goes on
        # reading (pongs above all) while one of them waits on the broker.
        self.line = FrameLine(serve, endpoint.hub.settings.reply_timeout)
        self.line.open_with(endpoint._open(conn, answering))

    async def end(self, code: int | None) -> None:
        try:
            try:
                await self.line.finish()
            finally:
                self._endpoint.hub.channel_routes.closed(self.conn)
                await self._endpoint.closed(self.conn, code)
        finally:
            self._endpoint.hub.release(self._user)


class ProtocolEndpoint(_Endpoint):
    """``/ws``: the JSON protocol of docs/protocol.md; identity also in an ``auth`` frame."""

    def identify(self, scope: Scope) -> Identity | Refusal | None:
        return self.handshake.identify_or_wait(scope)

    async def opened(self, conn: Connection, answering: FrameId | None) -> None:
        await self.hub.watch_direct(conn)
        await self.hub.greet(conn, answering)

    async def text(self, conn: Connection, text: str, deadline: float | None) -> None:
        await self.hub.handle_text(conn, text, deadline)

    def binary(self, conn: Connection) -> None:
        self.hub.handle_binary(conn)


class ChatEndpoint(_Endpoint):
    """``/ws/{client_id}``: the FastAPI tutorial's plain-text chat, without its bugs.

    With auth on, it needs a token like ``/ws``, and ``client_id`` must be the token's user:
    otherwise anyone could chat, unauthenticated, under any name.
    """

    kind = "chat"

    def identify(self, scope: Scope) -> Identity | Refusal:
        client_id = str(scope.get("path_params", {}).get("client_id", ""))
        identity = self._identify(scope, client_id)
        if isinstance(identity, Refusal):
            return identity
        # The client id is the name in the chat; the chat has no channels to permit.
        return Identity(client_id, expires=identity.expires)

    async def opened(self, conn: Connection, answering: FrameId | None) -> None:
        await chat.join(self.hub, conn)

    async def text(self, conn: Connection, text: str, deadline: float | None) -> None:
        await chat.say(self.hub, conn, text)

    def binary(self, conn: Connection) -> None:
        conn.close(1003, "binary frames are not supported")

    async def closed(self, conn: Connection, code: int | None) -> None:
        await chat.leave(self.hub, conn, code)

    def _identify(self, scope: Scope, client_id: str) -> Identity | Refusal:
        if self.handshake.open_mode:
            # Open mode keeps the tutorial's behaviour: any client id, no ``?user=``; only
            # the origin is checked.
            scope = {**scope, "query_string": b""}
        identity = self.handshake.identify(scope)
        if (
            isinstance(identity, Identity)
            and not self.handshake.open_mode
            and identity.user != client_id
        ):
            return Refusal(403, "the client id must be the token's user")
        return identity


def build_router(hub: Hub, handshake: Handshake | None = None) -> APIRouter:
    """The routes a hub adds to an app; including them also starts and stops the hub.

    ``handshake`` sets what is checked before an upgrade (token, origin); the default is
    open mode with any origin, for a hub whose app authenticates through ``authorize``.
    """
    handshake = handshake or Handshake()
    router = APIRouter(lifespan=hub.lifespan)
    router.routes.append(WebSocketRoute("/ws", ProtocolEndpoint(hub, handshake), name="wshub"))
    router.routes.append(
        WebSocketRoute("/ws/{client_id}", ChatEndpoint(hub, handshake), name="wshub_chat")
    )
    browser_routes.add_to(router, hub, handshake)
    router.add_api_route(
        "/sse", sse_endpoint(hub, handshake), methods=["GET"], tags=["protocol"],
        summary="The hub's stream as Server-Sent Events", response_class=Response,
    )  # fmt: skip
    router.add_api_route(
        "/sse/frame", frame_endpoint(hub, handshake), methods=["POST"], tags=["protocol"],
        summary="A client frame from an SSE stream's holder, and its reply",
        response_class=Response,
    )  # fmt: skip
    return router
