"""What runs on ``/ws`` under wshub's own transport (docs/configuration.md): the app's ASGI
middleware does not, the app's own WebSocket routes still go through it, and under uvicorn's
standard protocol ``/ws`` does too. A real uvicorn in this process, clients from the
`websockets` library."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from fastapi import FastAPI, WebSocket

from tests.support import connect, uvicorn_in_process
from wshub import Hub
from wshub.transport.owned import WshubTransport


class Recorder:
    """A pure ASGI middleware that notes the path of every WebSocket scope it is called for."""

    def __init__(self, app: Any, paths: list[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, list[str]]]:
    hub = Hub()
    app = FastAPI()
    app.include_router(hub.router)
    paths: list[str] = []
    app.add_middleware(Recorder, paths=paths)

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())

    async with uvicorn_in_process(app, ws=request.param) as server:
        yield server.config.port, paths


async def hub_then_echo(port: int) -> None:
    """A hub connection, then one to the app's own route: once the echo came back, the
    middleware has been called for both, if it is called for the first at all."""
    async with connect(f"ws://127.0.0.1:{port}", "ann") as client:
        assert client.welcome["user"] == "ann"
    async with websockets.connect(f"ws://127.0.0.1:{port}/echo") as echo:
        await echo.send("hello")
        assert await echo.recv() == "hello"


@pytest.mark.parametrize("served", [WshubTransport], indirect=True)
async def test_no_asgi_middleware_runs_on_ws_under_wshubs_transport(
    served: tuple[int, list[str]],
) -> None:
    port, paths = served
    await hub_then_echo(port)
    assert paths == ["/echo"]


@pytest.mark.parametrize("served", ["websockets-sansio"], indirect=True)
async def test_under_uvicorns_protocol_ws_goes_through_the_middleware(
    served: tuple[int, list[str]],
) -> None:
    port, paths = served
    await hub_then_echo(port)
    assert paths == ["/ws", "/echo"]
