"""What a browser client needs from a hub's router besides ``/ws``: the client's files
themselves and the refusal probe.

A browser cannot read a refused WebSocket handshake: ``new WebSocket()`` that gets a 401, 403
or 503 sees only a close with code 1006, no status, no body, no ``Retry-After``. So
``GET /ws`` over plain HTTP, with the same query string, answers what an upgrade would get
right now (the status, the reason and ``Retry-After``) without counting a connection, and
``wshub.js`` asks it after a handshake fails, to follow the protocol's "client does" column.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from wshub.core.admission import UNIDENTIFIED
from wshub.core.hub import HubCore
from wshub.transport.handshake import Handshake, Refusal, refusal_for

__all__ = ["CLIENT_FILES", "CLIENT_JS", "add_to", "client_file", "refusal_probe"]

STATIC: Final = Path(__file__).resolve().parent.parent / "static"
CLIENT_JS: Final = STATIC / "wshub.js"
CLIENT_FILES: Final = ("wshub.js", "wshub-tokens.js", "sse_link.js")
"""The browser client's modules: ``wshub.js`` imports ``./wshub-tokens.js``, and
``./sse_link.js`` when it goes over Server-Sent Events."""


def client_file(name: str) -> Callable[[], Awaitable[FileResponse]]:
    async def serve() -> FileResponse:
        """A module of the browser client; the same file the server serves under /static."""
        # no-cache: the client changes with the server it talks to, and is small.
        return FileResponse(
            STATIC / name, media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    return serve


def refusal_probe(
    hub: HubCore, handshake: Handshake
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def probe(request: Request) -> JSONResponse:
        """What a WebSocket upgrade of `/ws` with this query string would get now: `200` when
        it would be accepted, else the refusal's status (`400`, `401`, `403`, `503` with
        `Retry-After`) and its reason as JSON. Nothing is counted or opened. Browsers need
        this because they cannot read a refused handshake."""
        identity = handshake.identify_or_wait(request.scope)
        if isinstance(identity, Refusal):
            refusal: Refusal | None = identity
        else:  # no token: accepted, to wait for its auth frame (as UNIDENTIFIED)
            user = UNIDENTIFIED if identity is None else identity.user
            refused = hub.admission(user)
            refusal = None if refused is None else refusal_for(refused, hub.settings.retry_after)
        # Any page may read the answer: it says no more than the refused handshake did.
        headers = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}
        if refusal is None:
            accepted = {"status": 200, "reason": "a WebSocket upgrade would be accepted now"}
            return JSONResponse(accepted, headers=headers)
        body: dict[str, object] = {"status": refusal.status, "reason": refusal.reason}
        if refusal.retry_after is not None:
            retry_after = max(1, refusal.retry_after)
            body["retry_after"] = retry_after
            headers["Retry-After"] = str(retry_after)
            headers["Access-Control-Expose-Headers"] = "Retry-After"
        return JSONResponse(body, status_code=refusal.status, headers=headers)

    return probe


def add_to(router: APIRouter, hub: HubCore, handshake: Handshake) -> None:
    """Add ``GET /ws`` (the probe) and ``GET /static/wshub.js`` (with the module it imports) to
    a hub's router.

    The client's path is the server's, so a page imports ``/static/wshub.js`` whether it is
    served by ``wshub serve`` or by an app that includes ``hub.router``.
    """
    router.add_api_route(
        "/ws", refusal_probe(hub, handshake), methods=["GET"], tags=["protocol"],
        summary="Why a WebSocket upgrade of /ws would be refused",
    )  # fmt: skip
    for name in CLIENT_FILES:
        path = f"/static/{name}"
        router.add_api_route(path, client_file(name), methods=["GET"], include_in_schema=False)
