"""wshub's own WebSocket transport for uvicorn: ``uvicorn.Config(ws=WshubTransport)``.

uvicorn parses the HTTP request, sees ``Upgrade: websocket`` and hands the connection to its
``ws`` protocol class with the request's bytes. This class reads the request line first: a
path of one of the app's wshub endpoints (``/ws``, ``/ws/{client_id}``: see
:mod:`~wshub.transport.owned_routes`) is served here; any other path is handed, bytes and
all, to uvicorn's standard sans-I/O WebSocket protocol, unchanged, so the app's own WebSocket
routes behave exactly as under plain uvicorn.

For a wshub path, the handshake runs without ASGI: the sans-I/O ``ServerProtocol`` checks the
request, the endpoint admits the client or refuses it (the same statuses, bodies and
``Retry-After`` as the ASGI path's denial response), and the 101 is written. Then the
connection is a :class:`~wshub.transport.owned_frames.LiveWebSocket`. A client that sends
its token in an ``auth`` frame is served through ASGI-style ``receive``/``send`` callables
until it is identified, since that wait is the endpoint's code; only then is it a session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from wshub.transport.forwarded import forwarded_of
from wshub.transport.handshake import Refusal
from wshub.transport.owned_frames import LiveWebSocket
from wshub.transport.owned_refusal import refusal_response
from wshub.transport.owned_routes import OwnedEndpoint, routes_of
from wshub.transport.sessions import spawn

__all__ = ["WshubTransport"]

log = logging.getLogger("wshub.app.server")

_quiet = logging.getLogger("wshub.transport.frames")
"""websockets' own log ("connection open" for each client): warnings only."""
_quiet.setLevel(logging.WARNING)


class WshubTransport(LiveWebSocket):
    """The ``ws`` protocol class of ``wshub serve``: owns wshub's paths, delegates the rest."""

    __slots__ = ("_app_state", "_config", "_delegate", "_endpoint", "_path_params", "_server_state")

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        super().__init__(_loop or asyncio.get_event_loop())
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._delegate: WebSocketsSansIOProtocol | None = None
        self._endpoint: OwnedEndpoint | None = None
        self._path_params: dict[str, Any] | None = None
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._delegate is not None:
            self._delegate.data_received(data)
        elif self._endpoint is not None:
            self.frames_received(data)
        else:
            self._choose(data)

    def eof_received(self) -> bool | None:
        if self._delegate is not None:
            self._delegate.eof_received()
            return None
        return super().eof_received()

    def pause_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.pause_writing()
        else:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.resume_writing()
        else:
            super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._delegate is not None:
            self._delegate.connection_lost(exc)
            return
        self._server_state.connections.discard(self)
        self.frames_lost()

    def shutdown(self) -> None:
        """uvicorn's shutdown: 1012 to an open connection (after a drain there is none)."""
        self.stop_timers()
        if self.open:
            self.close_now(1012, "server shutting down", self.close_timeout)
        self.transport.close()

    # --- choosing --------------------------------------------------------------------------

    def _choose(self, data: bytes) -> None:
        """The request (uvicorn hands it whole) names the path: ours, or uvicorn's."""
        line = data.split(b"\r\n", 1)[0].split(b" ")
        target = line[1] if len(line) == 3 else b""
        path = unquote(target.partition(b"?")[0].decode("latin-1"))
        found = routes_of(self._config).match(path)
        if found is None:
            self._hand_over(data)
            return
        self._endpoint, self._path_params = found
        self.close_timeout = self._endpoint.close_timeout
        self.ws = ServerProtocol(max_size=self._config.ws_max_size, logger=_quiet)
        self.frames_received(data)
        ws = self.ws
        if ws.handshake_exc is not None and not self.transport.is_closing():
            status, reason, raw = refusal_response(ws.handshake_exc, ws.data_to_send())
            extra = {"event": "refused", "status": status, "reason": reason}
            log.info("handshake refused", extra={**extra, "peer": self._peer()})
            self.transport.write(raw)
            self.transport.close()

    def _hand_over(self, data: bytes) -> None:
        """Not a wshub path: uvicorn's own protocol takes the connection from here."""
        self._server_state.connections.discard(self)
        stock = WebSocketsSansIOProtocol(
            config=self._config,
            server_state=self._server_state,
            app_state=self._app_state,
            _loop=self.loop,
        )
        self._delegate = stock
        stock.connection_made(self.transport)
        stock.data_received(data)
        # uvicorn sets this object as the transport's protocol after this call returns; from
        # the next turn on the transport talks to uvicorn's protocol directly.
        self.loop.call_soon(self.transport.set_protocol, stock)

    # --- the handshake ---------------------------------------------------------------------

    def handshake(self, request: Any) -> None:
        assert isinstance(request, Request)
        endpoint = self._endpoint
        assert endpoint is not None
        ws = self.ws
        response = ws.accept(request)
        if response.status_code != 101:  # not a valid WebSocket request: websockets' answer
            ws.send_response(response)
            self.transport.write(b"".join(ws.data_to_send()))
            self.transport.close()
            return
        scope = self._scope(request)
        self._path_params = None  # in the scope now; the request goes with it
        admitted = endpoint.admit(scope)
        if isinstance(admitted, Refusal):
            self._refuse(admitted)
            return
        if endpoint.ready:
            self._accept(endpoint, response, scope, admitted)
        else:
            spawn(self._start_then_accept(endpoint, response, scope, admitted))

    def _scope(self, request: Request) -> dict[str, Any]:
        """What the endpoint reads of the request, in ASGI's shape; dropped once open. The
        client and scheme are the proxy's word for them where uvicorn would take it."""
        raw_path, _, query = request.path.partition("?")
        transport = self.transport
        scope = {
            "type": "websocket",
            "path": unquote(raw_path),
            "query_string": query.encode("latin-1"),
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in request.headers.raw_items()
            ],
            "client": transport.get_extra_info("peername"),
            "server": transport.get_extra_info("sockname"),
            "path_params": self._path_params,
            "scheme": "wss" if transport.get_extra_info("sslcontext") else "ws",
            "extensions": {},
            # What a channel check's FastAPI dependencies may read, as under ASGI.
            "app": routes_of(self._config).app,
            "state": self._app_state.copy(),
            "root_path": "",
            "raw_path": raw_path.encode("latin-1"),
            "http_version": "1.1",
            "subprotocols": [],
        }
        forwarded_of(self._config).apply(scope)
        return scope

    def _refuse(self, refusal: Refusal) -> None:
        ws = self.ws
        response = ws.reject(refusal.status, refusal.reason + "\n")
        if refusal.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, refusal.retry_after))
        ws.send_response(response)
        self.transport.write(b"".join(ws.data_to_send()))
        self.transport.close()

    async def _start_then_accept(
        self, endpoint: OwnedEndpoint, response: Any, scope: dict[str, Any], admitted: Any
    ) -> None:
        try:
            await endpoint.start()
        except BaseException:
            endpoint.release(admitted)
            self.transport.abort()
            raise
        self._accept(endpoint, response, scope, admitted)

    def _accept(
        self, endpoint: OwnedEndpoint, response: Any, scope: dict[str, Any], admitted: Any
    ) -> None:
        if self.lost or self.transport.is_closing():
            endpoint.release(admitted)
            return
        ws = self.ws
        ws.send_response(response)
        self.transport.write(b"".join(ws.data_to_send()))
        # A fresh parser for the frames: the handshake's keeps the request (and its headers)
        # alive in its generator for as long as the connection lives, about 3 KB.
        self.ws = ServerProtocol(max_size=self._config.ws_max_size, logger=_quiet, state=State.OPEN)
        self.open = True
        self.start_keepalive()
        if admitted.identity is None:
            self.inbox = asyncio.Queue()
            spawn(self._authenticate(endpoint, scope, admitted))
        else:
            self.session = endpoint.open(self, scope, admitted)

    async def _authenticate(
        self, endpoint: OwnedEndpoint, scope: dict[str, Any], admitted: Any
    ) -> None:
        inbox = self.inbox
        assert inbox is not None
        identified = await endpoint.authenticate(inbox.get, self._send, admitted)
        self.inbox = None
        if not identified:
            return
        if self.ended:  # gone between its auth frame and now
            endpoint.release(admitted)
            return
        self.session = endpoint.open(self, scope, admitted)

    async def _send(self, message: Any) -> None:
        """ASGI's ``send`` for the wait for the ``auth`` frame."""
        if self.lost:
            raise ConnectionResetError("the peer is gone")
        if message["type"] == "websocket.send":
            await self.send_text(message["text"])
        elif message["type"] == "websocket.close":
            self.close_now(message.get("code", 1000), message.get("reason", ""), self.close_timeout)

    def _peer(self) -> str:
        client = self.transport.get_extra_info("peername")
        return f"{client[0]}:{client[1]}" if client else ""
