"""A connection's transport through the standard ASGI WebSocket messages, for any ASGI server;
under wshub's uvicorn protocol it also takes the two extensions that protocol offers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wshub.core.connection import FastPath

__all__ = ["CLOSE_NOW", "FAST", "AsgiSocket"]

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

CLOSE_NOW = "wshub.close_now"
"""ASGI extension offered by wshub's uvicorn protocol: close at once, ignoring a full write
buffer, and drop the TCP connection if the close frame is not flushed in time."""


FAST = "wshub.fast"
"""ASGI extension offered by wshub's uvicorn protocol: a :class:`FastPath` to the transport."""

_background: set[asyncio.Task[Any]] = set()


class AsgiSocket:
    """A connection's transport through the standard ASGI WebSocket messages."""

    __slots__ = ("_close_now", "_close_timeout", "_send", "fast")

    def __init__(self, scope: Scope, send: Send, close_timeout: float) -> None:
        self._send = send
        self._close_timeout = close_timeout
        extensions = scope.get("extensions") or {}
        self._close_now: Callable[[int, str, float], None] | None = extensions.get(CLOSE_NOW)
        self.fast: FastPath | None = extensions.get(FAST)

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
