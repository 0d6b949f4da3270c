"""The standalone server's app: the hub's routes, the HTTP API, the dashboard, health, metrics,
pages and the AsyncAPI document. The WebSocket endpoints themselves are in
:mod:`wshub.app.routes`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from wshub import __version__
from wshub.app import api_docs, channel_docs, metrics
from wshub.app.asgi_socket import AsgiSocket
from wshub.app.dashboard import admin_router
from wshub.app.hub import Hub
from wshub.app.routes import build_router
from wshub.protocol import asyncapi
from wshub.transport.handshake import Handshake

__all__ = ["AsgiSocket", "build_router", "create_app"]

STATIC: Final = Path(__file__).resolve().parent.parent / "static"
"""The browser client, the chat page, the dashboard and the AsyncAPI page: no build step."""

PAGES: Final = {"/": "chat.html", "/admin": "admin.html", "/asyncapi": "asyncapi.html"}


def create_app(
    hub: Hub | None = None, handshake: Handshake | None = None, api_key: str | None = None
) -> FastAPI:
    """The standalone wshub server: the hub's routes, health, metrics, pages, AsyncAPI, and
    with ``api_key`` the HTTP API and the dashboard's data (``Authorization: apikey KEY``).

    Without ``api_key`` the HTTP API is not mounted at all: ``/api/*`` is a plain 404.
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
        docs_url=None,  # served by api_docs from the package's own assets: no CDN
        redoc_url=None,
    )
    app.include_router(build_router(hub, handshake))
    app.include_router(admin_router(hub, api_key))
    if api_key:
        from wshub.app.api import build_api

        app.include_router(build_api(hub, api_key))
    app.state.hub = hub
    api_docs.add_to(app)
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
        host = asyncapi.served_host(request.scope.get("server"))  # never the Host header
        document = asyncapi.document(host, secure=request.scope["scheme"] == "https")
        return JSONResponse(channel_docs.add_routes(document, hub.channel_routes))

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
