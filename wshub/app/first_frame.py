"""Waiting for the ``auth`` frame of a connection opened without a token.

The connection was admitted (it counts against the caps) and upgraded, but it is nobody's
yet: no hub connection exists, nothing is sent unasked. Frames are read and answered here, in
order, through the ASGI ``send`` (no writer exists yet, so the replies need no queue), until
:class:`~wshub.core.identity.FirstFrame` says who it is, or that it closes with 4003: a bad
token, or no ``auth`` within ``--auth-timeout`` seconds; or that the node goes away (a
drain or a stop: 1001 at once, see :mod:`~wshub.core.awaiting_auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wshub.core.auth import Identity, TokenVerifier
from wshub.core.awaiting_auth import AwaitingAuth
from wshub.core.identity import FirstFrame, Step
from wshub.model.config import Settings
from wshub.protocol import CloseCode, ErrorCode, FrameId, error

__all__ = ["AuthWait", "await_auth", "identify_in_band", "refuse_after_auth"]

log = logging.getLogger("wshub.app.server")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AuthWait:
    """The outcome: the verified step (identity and the ``auth`` frame's id), or None when the
    connection is over (closed with 4003, or gone), and the peer's close code if it went."""

    __slots__ = ("code", "step")

    def __init__(self, step: Step | None, code: int | None = None) -> None:
        self.step = step
        self.code = code


async def await_auth(
    receive: Receive, send: Send, gate: FirstFrame, timeout: float, going_away: asyncio.Event
) -> AuthWait:
    """Serve a new connection's frames until it is identified, closed or gone; closed with
    1001 at once when ``going_away`` is set (the node drains or stops)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    gone = asyncio.ensure_future(going_away.wait())
    reading: asyncio.Future[Message] | None = None
    try:
        while True:
            # One receive at a time, kept across turns: cancelling it could lose a frame.
            reading = reading or asyncio.ensure_future(receive())
            left = max(0.0, deadline - loop.time())
            await asyncio.wait((reading, gone), timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done() and not gone.done():
                step = gate.timed_out()
            elif not reading.done():
                step = Step(close=(CloseCode.GOING_AWAY, "server draining: reconnect"))
            else:
                message, reading = reading.result(), None
                kind = message["type"]
                if kind == "websocket.disconnect":
                    return AuthWait(None, message.get("code"))
                if kind != "websocket.receive":
                    continue
                step = gate.receive(message.get("text"))
            try:
                for reply in step.replies:
                    await send({"type": "websocket.send", "text": reply})
                if step.close is not None:
                    code, reason = step.close
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return AuthWait(None)
            except OSError:  # the peer went away meanwhile (uvicorn's ClientDisconnected)
                return AuthWait(None)
            if step.identity is not None:
                return AuthWait(step)
    finally:
        gone.cancel()
        if reading is not None:
            reading.cancel()


async def identify_in_band(
    receive: Receive,
    send: Send,
    verifier: TokenVerifier,
    settings: Settings,
    awaiting: AwaitingAuth,
) -> tuple[Identity, FrameId | None] | None:
    """The identity and the ``auth`` frame's id, or None: the connection is over (or the
    node went away meanwhile: closed with 1001)."""
    gate = FirstFrame(verifier, settings.max_frame_bytes)
    with awaiting.waiting() as going_away:
        wait = await await_auth(receive, send, gate, settings.auth_timeout, going_away)
    if wait.step is None or wait.step.identity is None:
        return None
    return wait.step.identity, wait.step.frame_id


async def refuse_after_auth(send: Send, reason: str, answering: FrameId | None) -> None:
    """A verified ``auth`` frame whose user may not connect now (the per-user cap, a drain):
    what a 503 handshake would have said, as an ``error`` ``limit`` and the close 1001 that
    a 503 counts as (PROTOCOL.md "Close codes")."""
    log.info("auth refused after the upgrade: %s", reason)
    with contextlib.suppress(OSError):
        await send({"type": "websocket.send", "text": error(ErrorCode.LIMIT, reason, answering)})
        await send({"type": "websocket.close", "code": CloseCode.GOING_AWAY, "reason": reason})
