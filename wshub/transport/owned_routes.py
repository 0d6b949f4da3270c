"""Which WebSocket paths wshub's own transport serves: the app's wshub endpoints.

An endpoint that the transport can drive without ASGI is an :class:`OwnedEndpoint` (``/ws``
and ``/ws/{client_id}`` of :mod:`wshub.app.routes` are). The table is read once per server
from the app uvicorn loaded, through its middleware, and matched with Starlette's own route
matching, so a path means what it means to the app. Every other WebSocket path is left to
uvicorn's standard protocol.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol, runtime_checkable

from starlette.routing import Match, WebSocketRoute

from wshub.core.connection import Socket

__all__ = ["OwnedEndpoint", "RouteTable", "routes_of"]

Message = MutableMapping[str, Any]


@runtime_checkable
class OwnedEndpoint(Protocol):
    """A WebSocket endpoint in steps: admit before the upgrade, authenticate in band, open."""

    @property
    def close_timeout(self) -> float: ...

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The endpoint as a plain ASGI app, for every other server."""

    def admit(self, scope: MutableMapping[str, Any]) -> Any:
        """An admission (with ``identity``, None until the ``auth`` frame) or a Refusal."""

    def release(self, admitted: Any) -> None: ...

    async def authenticate(
        self,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
        admitted: Any,
    ) -> bool: ...

    def open(self, socket: Socket, scope: MutableMapping[str, Any], admitted: Any) -> Any:
        """An :class:`~wshub.transport.owned_frames.OwnedSession`."""


class RouteTable:
    """The app's wshub WebSocket routes, in the app's order."""

    __slots__ = ("_routes", "app")

    def __init__(self, app: Any) -> None:
        self.app = _app_of(app)
        """The Starlette app under the wrappers: the ``app`` of a scope (dependency overrides)."""
        # Matched with routes of their own: a router included with a prefix keeps its
        # WebSocket routes under it, with the prefix apart, in recent FastAPI versions.
        self._routes = [
            (WebSocketRoute(path, endpoint), endpoint) for path, endpoint in _owned(app)
        ]

    def __bool__(self) -> bool:
        return bool(self._routes)

    def match(self, path: str) -> tuple[OwnedEndpoint, dict[str, Any]] | None:
        """The endpoint for ``path`` and its path parameters, or None: not one of wshub's."""
        scope = {"type": "websocket", "path": path, "root_path": ""}
        for route, endpoint in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return endpoint, child.get("path_params", {})
        return None


def _owned(app: Any) -> Iterator[tuple[str, OwnedEndpoint]]:
    """The app's wshub endpoints with their full paths, in the app's order."""

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, OwnedEndpoint]]:
        for route in routes:
            if isinstance(route, WebSocketRoute) and isinstance(route.endpoint, OwnedEndpoint):
                yield prefix + route.path, route.endpoint
            included = getattr(route, "original_router", None)  # FastAPI >= 0.165
            if included is not None:
                context = getattr(route, "include_context", None)
                yield from walk(included.routes, prefix + getattr(context, "prefix", ""))

    return walk(_routes_of(app), "")


def _app_of(app: Any) -> Any:
    """The Starlette app (the one with routes) under uvicorn's and the app's ASGI wrappers."""
    for _ in range(32):
        router = getattr(app, "router", None)
        routes = getattr(router, "routes", None) or getattr(app, "routes", None)
        if isinstance(routes, list):
            return app
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def _routes_of(app: Any) -> list[Any]:
    found = _app_of(app)
    if found is None:
        return []
    router = getattr(found, "router", None)
    routes: list[Any] = getattr(router, "routes", None) or found.routes
    return routes


_tables: weakref.WeakKeyDictionary[Any, RouteTable] = weakref.WeakKeyDictionary()


def routes_of(config: Any) -> RouteTable:
    """The route table of the app a uvicorn ``Config`` loaded, read once."""
    table = _tables.get(config)
    if table is None:
        table = _tables[config] = RouteTable(config.loaded_app)
    return table
