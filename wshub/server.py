"""The thin edge: ASGI endpoints that turn WebSocket events into hub calls, and the app factory.

The two WebSocket endpoints are raw ASGI callables rather than FastAPI functions: the hub needs
the handshake before the upgrade (to refuse with an HTTP status), the raw text of each frame,
and a send that skips per-message wrapper checks on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import WebSocketRoute

from wshub import __version__, asyncapi, metrics, protocol
from wshub.dashboard import admin_router
from wshub.hub import Hub, Refusal

__all__ = ["AsgiLink", "build_router", "create_app"]

log = logging.getLogger("wshub.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CLOSE_NOW = "wshub.close_now"
"""ASGI extension offered by wshub's uvicorn protocol: close at once, ignoring a full write
buffer, and drop the TCP connection if the close frame is not flushed in time."""

STATIC: Final = Path(__file__).resolve().parent / "static"
"""The browser client, the chat page, the dashboard and the AsyncAPI page: no build step."""

PAGES: Final = {"/": "chat.html", "/admin": "admin.html", "/asyncapi": "asyncapi.html"}

_background: set[asyncio.Task[Any]] = set()


class AsgiLink:
    """A connection's transport through the standard ASGI WebSocket messages."""

    __slots__ = ("_close_now", "_close_timeout", "_send")

    def __init__(self, scope: Scope, send: Send, close_timeout: float) -> None:
        self._send = send
        self._close_timeout = close_timeout
        self._close_now: Callable[[int, str, float], None] | None = (
            scope.get("extensions") or {}
        ).get(CLOSE_NOW)

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def drop(self, code: int, reason: str) -> None:
        if self._close_now is not None:
            self._close_now(code, reason, self._close_timeout)
            return
        # Any other ASGI server: ask for a close and stop waiting after the timeout. Whether
        # the TCP connection is dropped then is up to that server.
        task = asyncio.ensure_future(self._close_within(code, reason))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _close_within(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.close(code, reason), self._close_timeout)


def open_mode_user(scope: Scope) -> str | None:
    """The user id in open mode: ``?user=NAME``, or a fresh ``anon-XXXXXXXX``.

    None when the requested name is not a valid user id.
    """
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    names = query.get("user")
    if not names:
        return f"anon-{secrets.token_hex(4)}"
    name = names[0]
    return name if protocol.is_user_id(name) else None


def peer_of(scope: Scope) -> str:
    """``host:port`` of the client as the server saw it (a proxy's address behind one)."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


async def refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    """Refuse a WebSocket handshake with an HTTP status, before any upgrade."""
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


class ProtocolEndpoint:
    """``/ws``: the JSON protocol of PROTOCOL.md."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        hub = self.hub
        user = open_mode_user(scope)
        if user is None:
            hub.metrics.handshake_refused(400)
            await refuse(scope, send, Refusal(400, "invalid user id"))
            return
        refusal = hub.admit(user)
        if refusal is not None:
            await refuse(scope, send, refusal)
            return
        try:
            await hub.start()
            await send({"type": "websocket.accept"})
            link = AsgiLink(scope, send, hub.settings.close_timeout)
            conn = hub.connect(user, link, peer=peer_of(scope))
            code: int | None = None
            try:
                await hub.ready(conn)
                hub.welcome(conn)
                handle_text = hub.handle_text
                while True:
                    message = await receive()
                    kind = message["type"]
                    if kind == "websocket.receive":
                        text = message.get("text")
                        if text is not None:
                            await handle_text(conn, text)
                        else:
                            hub.handle_binary(conn)
                    elif kind == "websocket.disconnect":
                        code = message.get("code")
                        break
            finally:
                await hub.disconnect(conn, code)
        finally:
            hub.release(user)


class ChatEndpoint:
    """``/ws/{client_id}``: the FastAPI tutorial's plain-text chat, without its bugs."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        hub = self.hub
        client_id = str(scope.get("path_params", {}).get("client_id", ""))
        refusal = hub.admit(client_id)
        if refusal is not None:
            await refuse(scope, send, refusal)
            return
        try:
            await hub.start()
            await send({"type": "websocket.accept"})
            link = AsgiLink(scope, send, hub.settings.close_timeout)
            conn = hub.connect(client_id, link, "chat", peer_of(scope))
            code: int | None = None
            try:
                await hub.chat_join(conn)
                while True:
                    message = await receive()
                    kind = message["type"]
                    if kind == "websocket.receive":
                        text = message.get("text")
                        if text is None:
                            conn.close(1003, "binary frames are not supported")
                            continue
                        await hub.chat_say(conn, text)
                    elif kind == "websocket.disconnect":
                        code = message.get("code")
                        break
            finally:
                await hub.chat_leave(conn, code)
        finally:
            hub.release(client_id)


def build_router(hub: Hub) -> APIRouter:
    """The routes a hub adds to an app; including them also starts and stops the hub."""
    router = APIRouter(lifespan=hub.lifespan)
    router.routes.append(WebSocketRoute("/ws", ProtocolEndpoint(hub), name="wshub"))
    router.routes.append(WebSocketRoute("/ws/{client_id}", ChatEndpoint(hub), name="wshub_chat"))
    return router


def create_app(hub: Hub | None = None, *, api_key: str | None = None) -> FastAPI:
    """The standalone wshub server: the hub's routes, health, metrics, pages and AsyncAPI.

    ``api_key`` unlocks ``/admin/stats`` (``Authorization: apikey KEY``); without one the
    dashboard's data stays off.
    """
    hub = hub or Hub()
    app = FastAPI(
        title="wshub",
        version=__version__,
        description=(
            "A real-time messaging hub. The WebSocket protocol lives at `/ws`: OpenAPI cannot "
            "describe it, so it has its own AsyncAPI 3.0 document at "
            "[/asyncapi.json](/asyncapi.json), readable at [/asyncapi](/asyncapi). "
            "`/ws/{client_id}` is a plain-text chat. Pages: the chat at [/](/), the "
            "dashboard at [/admin](/admin); Prometheus metrics at [/metrics](/metrics)."
        ),
    )
    app.include_router(hub.router)
    app.include_router(admin_router(hub, api_key))
    app.state.hub = hub
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    for path, page in PAGES.items():
        app.add_api_route(path, _page(STATIC / page), methods=["GET"], include_in_schema=False)

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics() -> Response:
        """Prometheus text format; every worker's figures when PROMETHEUS_MULTIPROC_DIR is set."""
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", tags=["protocol"])
    async def asyncapi_document(request: Request) -> JSONResponse:
        """The AsyncAPI 3.0 document of the WebSocket protocol at `/ws`."""
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        return JSONResponse(asyncapi.document(host, secure=request.url.scheme == "https"))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness: 200 while the process runs and its hub is started, draining or not."""
        status = 200 if hub.serving else 503
        return JSONResponse(
            {"status": "ok" if status == 200 else "starting", "connections": hub.connection_count},
            status_code=status,
        )

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Readiness: 200 when this node accepts connections (broker connected, not
        draining); 503 otherwise, so a load balancer sends new clients elsewhere."""
        if hub.accepting:
            status = "ready"
        elif hub.draining:
            status = "draining"
        elif not hub.serving:
            status = "starting"
        else:
            status = "broker unavailable"
        return JSONResponse(
            {"status": status, "connections": hub.connection_count},
            status_code=200 if status == "ready" else 503,
        )

    return app


def _page(path: Path) -> Callable[[], Awaitable[FileResponse]]:
    async def page() -> FileResponse:
        # no-cache: the pages and wshub.js change with the server, and are tiny.
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    return page
