"""The start-up check of the uvicorn internals wshub's WebSocket protocol builds on.

:class:`wshub.transport.uvicorn_ws.WshubWebSocketProtocol` subclasses uvicorn's sans-I/O WebSocket
protocol and uses its attributes, which are not a public API: they changed within the range
of uvicorn versions pip may install (0.52.0 has no ``pause_writing``, so its ``writable`` never
clears and a slow reader's buffer grows without bound). Rather than fail at the first
connection, or worse deliver while holding unbounded memory, ``wshub serve`` checks them once
at start and, if any is missing, serves WebSockets through uvicorn's own protocol and plain
ASGI, with one warning saying why.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any, Final

__all__ = ["WSHUB_PROTOCOL", "missing_internals", "ws_protocol"]

log = logging.getLogger("wshub.app.server")

WSHUB_PROTOCOL: Final = "wshub.transport.uvicorn_ws:WshubWebSocketProtocol"
_SANSIO: Final = "uvicorn.protocols.websockets.websockets_sansio_impl"

METHODS: Final = (
    "data_received",
    "handle_connect",
    "handle_ping",
    "handle_close",
    "handle_parser_exception",
    "keepalive_timeout",
    "send",
    "shutdown",
    "pause_writing",
    "resume_writing",
)
"""Methods the subclass overrides or relies on; each must be uvicorn's own, not inherited
from :class:`asyncio.Protocol` (whose flow-control methods do nothing)."""

ATTRIBUTES: Final = (
    "conn",
    "queue",
    "loop",
    "close_sent",
    "close_timer",
    "close_timeout",
    "disconnected",
    "handshake_initiated",
    "handshake_complete",
    "read_paused",
    "writable",
)
"""Attributes a fresh instance must have (``transport``, ``client``, ``scope`` and
``response`` are set later, by ``connection_made`` and ``handle_connect``)."""

CONN_ATTRIBUTES: Final = ("state", "close_sent", "handshake_exc", "data_to_send", "send_close")
"""What the subclass uses of the websockets sans-I/O ``ServerProtocol`` in ``conn``."""


def missing_internals() -> list[str]:
    """What the installed uvicorn and websockets lack of what the subclass uses; [] if none."""
    try:
        sansio = importlib.import_module(_SANSIO)
        importlib.import_module("wshub.transport.uvicorn_ws")
    except ImportError as exc:
        return [f"{exc.name or exc}"]
    base = sansio.WebSocketsSansIOProtocol
    missing = [
        f"WebSocketsSansIOProtocol.{name}"
        for name in METHODS
        if getattr(base, name, None) in (None, getattr(asyncio.Protocol, name, None))
    ]
    try:
        instance = _instance(base)
    except Exception as exc:
        return [*missing, f"WebSocketsSansIOProtocol() ({exc!r})"]
    missing += [f"WebSocketsSansIOProtocol.{n}" for n in ATTRIBUTES if not hasattr(instance, n)]
    conn = getattr(instance, "conn", None)
    missing += [f"ServerProtocol.{n}" for n in CONN_ATTRIBUTES if not hasattr(conn, n)]
    if not isinstance(getattr(instance, "writable", None), asyncio.Event):
        missing.append("WebSocketsSansIOProtocol.writable (an asyncio.Event)")
    return missing


def _instance(cls: Any) -> Any:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    config = Config(app, ws="none", lifespan="off", log_config=None)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        return cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()


def ws_protocol() -> str:
    """The ``ws`` for uvicorn: wshub's protocol, or with one warning uvicorn's own."""
    missing = missing_internals()
    if not missing:
        return WSHUB_PROTOCOL
    import uvicorn

    # uvicorn's default, not its sans-I/O protocol: where that lacks what wshub needs, it may
    # lack flow control too (0.52.0 never pauses a send for a full buffer).
    fallback = "auto"
    log.warning(
        "uvicorn %s lacks what wshub's WebSocket protocol needs (%s): serving WebSockets "
        "through uvicorn's %r protocol and plain ASGI instead, without the fast path; "
        "install the uvicorn version wshub pins",
        uvicorn.__version__,
        ", ".join(missing),
        fallback,
    )
    return fallback
