"""The start-up check of the uvicorn internals that ``wshub serve`` builds on.

uvicorn's public API is its ``Config`` and ``Server``; ``wshub serve`` also relies on parts that
are not, and that change even in patch releases:

- :mod:`wshub.transport.uvicorn_http` subclasses ``HttpToolsProtocol``: its parser callbacks,
  its per-request state (``parser``, ``url``, ``headers``, ``scope``, ``cycle``,
  ``pipeline``), its upgrade helpers, its ``STATUS_LINE`` table and the ``cycle``'s flags;
- :class:`~wshub.transport.owned.WshubTransport` is the ``ws`` class uvicorn builds on an
  upgrade: with the keywords ``config``, ``server_state`` and ``app_state``, then
  ``connection_made``, then the whole request in one ``data_received``, then
  ``set_protocol``; it joins ``server_state.connections`` for uvicorn's shutdown, reads the
  ``Config``'s ``ws_*`` and proxy settings, and hands every other path to uvicorn's
  ``WebSocketsSansIOProtocol``, built and fed the same way;
- :mod:`wshub.transport.forwarded` runs ``ProxyHeadersMiddleware`` over a scope in one step.

pyproject.toml bounds uvicorn to :data:`TESTED`, the releases the suite runs against (the
lowest and the newest lock). Where an install is outside it anyway, this check makes ``wshub
serve`` stop at start, naming what is missing and the range, rather than fail at the first
connection or, worse, serve with a flow control that silently does nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["TESTED", "check_uvicorn", "missing_internals"]

log = logging.getLogger("wshub.transport")

TESTED: Final = ">=0.52.1,<=0.54.0"
"""The uvicorn releases wshub is tested with: the range in pyproject.toml."""

_HTTP: Final = "uvicorn.protocols.http.httptools_impl"
_SANSIO: Final = "uvicorn.protocols.websockets.websockets_sansio_impl"

OWN_METHODS: Final = {
    (_HTTP, "HttpToolsProtocol"): (
        "connection_made", "connection_lost", "data_received", "on_message_begin", "on_url",
        "on_header", "on_headers_complete", "on_message_complete", "on_response_complete",
        "handle_websocket_upgrade", "_should_upgrade", "_unsupported_upgrade_warning",
        "_unset_keepalive_if_required",
    ),
    (_SANSIO, "WebSocketsSansIOProtocol"): (
        "connection_made", "data_received", "eof_received", "pause_writing", "resume_writing",
        "connection_lost", "shutdown",
    ),
}  # fmt: skip
"""Methods each class must define itself, not inherit from :class:`asyncio.Protocol` (whose
flow-control methods do nothing)."""

CYCLE_FLAGS: Final = ("response_started", "response_complete", "disconnected", "message_event")
CONFIG: Final = (
    "loaded", "loaded_app", "ws_protocol_class", "ws_max_size", "ws_ping_interval",
    "ws_ping_timeout", "proxy_headers", "forwarded_allow_ips",
)  # fmt: skip
HTTP_STATE: Final = ("parser", "pipeline", "cycle", "url", "headers", "scope", "client", "loop")
BUILT_WITH: Final = ("config", "server_state", "app_state")
STATUSES: Final = (400, 408, 414, 431)
_REQUEST: Final = (
    b"GET /ws?user=check HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)

Load = Callable[[str], Any]


def missing_internals(load: Load = importlib.import_module) -> list[str]:
    """What the installed uvicorn lacks of what ``wshub serve`` uses; [] if nothing.

    ``load`` imports a module by name (a test gives modules with a part taken out)."""
    try:
        http, sansio = load(_HTTP), load(_SANSIO)
        config_module, server = load("uvicorn.config"), load("uvicorn.server")
        load("uvicorn.middleware.proxy_headers")
    except ImportError as exc:
        return [str(exc.name or exc)]
    missing = []
    for (module, name), methods in OWN_METHODS.items():
        cls = getattr(http if module == _HTTP else sansio, name, None)
        if cls is None:
            missing.append(name)
            continue
        own = [
            m for m in methods if getattr(cls, m, None) in (None, getattr(asyncio.Protocol, m, 0))
        ]
        missing += [f"{name}.{m}" for m in own]
        if not set(BUILT_WITH) <= set(inspect.signature(cls).parameters):
            missing.append(f"{name}({', '.join(f'{k}=' for k in BUILT_WITH)})")
    status_line = getattr(http, "STATUS_LINE", {})
    missing += [f"STATUS_LINE[{s}]" for s in STATUSES if s not in status_line]
    cycle = getattr(http, "RequestResponseCycle", None)
    assigned = set(getattr(getattr(cycle, "__init__", None), "__code__", _NO_CODE).co_names)
    missing += [f"RequestResponseCycle.{f}" for f in CYCLE_FLAGS if f not in assigned]
    if missing:  # the hand-off below would only fail on what is already named
        return missing
    try:
        return _hand_off(http.HttpToolsProtocol, config_module.Config, server.ServerState)
    except Exception as exc:
        return [f"the WebSocket upgrade hand-off ({exc!r})"]


_NO_CODE: Final = compile("", "<none>", "exec")


def _hand_off(protocol: Any, config_class: Any, state_class: Any) -> list[str]:
    """Feed an upgrade request to uvicorn's HTTP protocol and see how it hands it on."""
    made: list[_Recorder] = []

    class Recording(_Recorder):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    config = config_class(app, ws=Recording, lifespan="off", log_config=None)
    config.load()
    missing = [f"Config.{name}" for name in CONFIG if not hasattr(config, name)]
    state = state_class()
    if not isinstance(getattr(state, "connections", None), set):
        missing.append("ServerState.connections")
    loop = asyncio.new_event_loop()
    try:
        http = protocol(config=config, server_state=state, app_state={}, _loop=loop)
        socket = _Socket()
        http.connection_made(socket)
        http.data_received(_REQUEST)
    finally:
        loop.close()
    missing += [f"HttpToolsProtocol.{name}" for name in HTTP_STATE if not hasattr(http, name)]
    handed = made[0] if len(made) == 1 else None
    if handed is None or set(handed.kwargs) != set(BUILT_WITH):
        missing.append(f"the ws class built with {', '.join(BUILT_WITH)}")
    elif handed.transport is not socket or socket.protocol is not handed:
        missing.append("the ws class given the connection's transport")
    elif [data.lower() for data in handed.received] != [_REQUEST.lower()]:
        # Rebuilt from the parsed request, with the header names in lower case.
        missing.append("the upgrade request handed on whole, in one data_received")
    return missing


class _Recorder(asyncio.Protocol):
    """A ``ws`` class that records what uvicorn gives it."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.transport: Any = None
        self.received: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


class _Socket(asyncio.Transport):
    """A transport that is never written to: the check ends at the hand-off."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return False


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def in_tested_range(version: str) -> bool:
    low, high = (_release(bound) for bound in TESTED.split(","))
    return low <= _release(version) <= high


def check_uvicorn(load: Load = importlib.import_module, version: str | None = None) -> str | None:
    """None if ``wshub serve`` can run on the installed uvicorn, else why not, for the person
    starting it. A release outside :data:`TESTED` that has everything gets one warning."""
    if version is None:
        version = str(load("uvicorn").__version__)
    missing = missing_internals(load)
    if missing:
        return (
            f"uvicorn {version} lacks what wshub's transport builds on ({', '.join(missing)}); "
            f"wshub is tested with uvicorn{TESTED}: pip install 'uvicorn[standard]{TESTED}'"
        )
    if not in_tested_range(version):
        log.warning(
            "uvicorn %s is outside the range wshub is tested with (%s); the internals wshub "
            "uses are all there, but their behaviour may have changed",
            version,
            TESTED,
        )
    return None
