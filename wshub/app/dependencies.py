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
every time. Dependencies with ``yield`` are closed when the connection ends.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, MutableMapping
from contextlib import AsyncExitStack
from typing import Any, NoReturn

from fastapi import HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant, solve_dependencies
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket

from wshub.core.channel_rules import describe
from wshub.core.connection import Connection
from wshub.core.hooks import BadRequest, Forbidden

__all__ = ["Check", "Handshakes"]

log = logging.getLogger("wshub.app.channels")

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


def _uses_pattern(dependant: Dependant) -> bool:
    return bool(dependant.path_params) or any(map(_uses_pattern, dependant.dependencies))


def _reads_body(dependant: Dependant) -> bool:
    return bool(dependant.body_params) or any(map(_reads_body, dependant.dependencies))


def _shared_calls(dependant: Dependant) -> set[Any]:
    """The dependencies whose answer is the same for every channel of a connection."""
    calls: set[Any] = set()
    for sub in dependant.dependencies:
        if not _uses_pattern(sub):
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
    __slots__ = ("cache", "scope", "stack")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.cache: dict[Any, Any] = {}
        self.stack = AsyncExitStack()


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

    async def closed(self, conn: Connection) -> None:
        handshake = self._open.pop(conn, None)
        if handshake is not None:
            try:
                await handshake.stack.aclose()  # the connection's ``yield`` dependencies
            except Exception:
                log.exception("a channel check's dependency failed while closing")

    def __len__(self) -> int:
        return len(self._open)

    async def decide(self, check: Check, conn: Connection, params: dict[str, str]) -> bool:
        """Run ``check`` for ``conn``: True allows; anything else refuses.

        ``HTTPException`` from the check or a dependency is ``forbidden`` with its detail;
        parameters that do not convert are ``bad_request``, in FastAPI's error format.
        """
        handshake = self._open.get(conn)
        if handshake is None:
            handshake = self._open.setdefault(conn, _Handshake(dict(_NO_HANDSHAKE)))
        stack = handshake.stack
        scope = {
            **handshake.scope,
            "path_params": params,
            # Where FastAPI's versions look for the stack of ``yield`` dependencies.
            "fastapi_astack": stack,
            "fastapi_inner_astack": stack,
            "fastapi_function_astack": stack,
        }
        app = scope.get("app")
        overrides = app if hasattr(app, "dependency_overrides") else None
        try:
            solved = await solve_dependencies(
                request=WebSocket(scope, _no_receive, _no_send),
                dependant=check.dependant,
                dependency_overrides_provider=overrides,
                dependency_cache=dict(handshake.cache),
                async_exit_stack=stack,
                embed_body_fields=False,
            )
            if solved.errors:
                errors = [
                    {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]}
                    for e in solved.errors
                ]
                raise BadRequest(describe(errors))
            for key, value in solved.dependency_cache.items():
                if key[0] in check.shared:
                    handshake.cache[key] = value
            if inspect.iscoroutinefunction(check.call):
                result = await check.call(**solved.values)
            else:
                result = await run_in_threadpool(check.call, **solved.values)
        except HTTPException as exc:
            raise Forbidden(_detail(exc)) from None
        return result is True


def _detail(exc: HTTPException) -> str:
    detail = exc.detail
    return detail if isinstance(detail, str) else json.dumps(detail, default=str)
