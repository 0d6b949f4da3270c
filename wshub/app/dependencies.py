"""FastAPI dependencies for channel checks, resolved against a connection's WebSocket handshake.

A check (``@orders.can_join``) is called the way FastAPI calls a route: its parameters named in
the channel pattern are path parameters, converted from their annotations; the others are
query parameters, headers, cookies or ``Depends``, read from the handshake that opened the
connection. FastAPI's own machinery (``get_dependant``, ``solve_dependencies``) does it, so a
dependency written for an HTTP route works unchanged.

A route's dependencies are cached per request; here a connection plays the request, so a
dependency runs once per connection (``current_user`` is not looked up again on every join)
unless it reads a pattern parameter, directly or through its own dependencies: those run for
each check, as their answer depends on the channel. ``Depends(..., use_cache=False)`` runs
every time. A dependency with ``yield`` is closed after each check, as FastAPI closes it after
each request, so it (and what depends on it) runs for each check too.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, MutableMapping
from contextlib import AsyncExitStack
from typing import Any, NoReturn

from fastapi import HTTPException, WebSocketException
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant, solve_dependencies
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.websockets import WebSocket

from wshub.core.channel_rules import describe
from wshub.core.connection import Connection
from wshub.core.hooks import BadRequest, Forbidden

__all__ = ["Check", "Handshakes", "connection_user"]

Scope = MutableMapping[str, Any]

_NO_HANDSHAKE: dict[str, Any] = {
    "type": "websocket",
    "path": "/ws",
    "raw_path": b"/ws",
    "query_string": b"",
    "headers": [],
    "scheme": "ws",
}
"""For a connection that no WebSocket endpoint opened (tests of the core, a custom transport):
it has no headers, query or cookies to offer."""


def _per_check(dependant: Dependant) -> bool:
    """Whether a dependency's answer may differ between checks of one connection: it reads a
    pattern parameter, or it has ``yield`` (its resource is closed after each check), or one
    of its own dependencies does."""
    call = dependant.call
    return (
        bool(dependant.path_params)
        or inspect.isasyncgenfunction(call)
        or inspect.isgeneratorfunction(call)
        or any(map(_per_check, dependant.dependencies))
    )


def _reads_body(dependant: Dependant) -> bool:
    return bool(dependant.body_params) or any(map(_reads_body, dependant.dependencies))


def _shared_calls(dependant: Dependant) -> set[Any]:
    """The dependencies whose answer is the same for every channel of a connection."""
    calls: set[Any] = set()
    for sub in dependant.dependencies:
        if not _per_check(sub):
            calls.add(sub.call)
        calls |= _shared_calls(sub)
    return calls


class Check:
    """One ``can_join`` or ``can_publish`` function, with its dependencies analysed once."""

    __slots__ = ("call", "dependant", "shared")

    def __init__(self, pattern: str, call: Callable[..., Any]) -> None:
        self.call = call
        # The pattern as the "path": FastAPI takes its {names} for the path parameters.
        self.dependant = get_dependant(path=pattern, call=call)
        if _reads_body(self.dependant):
            raise TypeError(
                f"{call.__qualname__}: a channel check has no body to read "
                "(its parameters come from the channel, the handshake and Depends)"
            )
        self.shared = _shared_calls(self.dependant)


class _Handshake:
    __slots__ = ("cache", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.cache: dict[Any, Any] = {}


_USER = "wshub.user"


def connection_user(connection: HTTPConnection) -> str:
    """A dependency: the user wshub identified the connection as (its token's ``sub``, or
    ``?user=`` in open mode), for checks on a hub that verifies tokens itself."""
    return str(connection.scope[_USER])


async def _no_receive() -> NoReturn:
    raise RuntimeError("a channel check cannot read from the WebSocket: the hub reads it")


async def _no_send(message: Any) -> NoReturn:
    raise RuntimeError("a channel check cannot write to the WebSocket: the hub writes it")


class Handshakes:
    """Each open connection's handshake, and the dependencies already resolved against it."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[Connection, _Handshake] = {}

    def opened(self, conn: Connection, scope: Scope) -> None:
        self._open[conn] = _Handshake(scope)

    def closed(self, conn: Connection) -> None:
        self._open.pop(conn, None)

    def __len__(self) -> int:
        return len(self._open)

    async def decide(self, check: Check, conn: Connection, params: dict[str, str]) -> bool:
        """Run ``check`` for ``conn``: True allows; anything else refuses.

        ``HTTPException`` from the check or a dependency is ``forbidden`` with its detail;
        parameters that do not convert are ``bad_request``, in FastAPI's error format.
        """
        handshake = self._open.get(conn) or _Handshake(dict(_NO_HANDSHAKE))  # cached nowhere
        try:
            async with AsyncExitStack() as stack:  # this check's ``yield`` dependencies
                result = await self._run(check, conn, handshake, params, stack)
        except HTTPException as exc:
            raise Forbidden(_detail(exc)) from None
        except WebSocketException as exc:  # what a FastAPI WebSocket route's dependency raises
            raise Forbidden(exc.reason or "refused by the channel's check") from None
        return result is True

    async def _run(
        self,
        check: Check,
        conn: Connection,
        handshake: _Handshake,
        params: dict[str, str],
        stack: AsyncExitStack,
    ) -> Any:
        scope = {
            **handshake.scope,
            "path_params": params,
            _USER: conn.user,
            # Where FastAPI's versions look for the stack of ``yield`` dependencies.
            "fastapi_astack": stack,
            "fastapi_inner_astack": stack,
            "fastapi_function_astack": stack,
        }
        app = scope.get("app")
        # A stream (``GET /sse``) was opened by an HTTP request, a WebSocket by its handshake.
        request: Request | WebSocket = (
            Request(scope, _no_receive)
            if scope.get("type") == "http"
            else WebSocket(scope, _no_receive, _no_send)
        )
        solved = await solve_dependencies(
            request=request,
            dependant=check.dependant,
            dependency_overrides_provider=app if hasattr(app, "dependency_overrides") else None,
            dependency_cache=dict(handshake.cache),
            async_exit_stack=stack,
            embed_body_fields=False,
        )
        if solved.errors:
            errors = [
                {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in solved.errors
            ]
            raise BadRequest(describe(errors))
        for key, value in solved.dependency_cache.items():
            if key[0] in check.shared:
                handshake.cache[key] = value
        if inspect.iscoroutinefunction(check.call):
            return await check.call(**solved.values)
        return await run_in_threadpool(check.call, **solved.values)


def _detail(exc: HTTPException) -> str:
    detail = exc.detail
    return detail if isinstance(detail, str) else json.dumps(detail, default=str)
