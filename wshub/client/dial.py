"""Opening one WebSocket to the server: the handshake, the ``auth`` frame, and ``welcome``."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import websockets
from websockets.asyncio.client import ClientConnection

from wshub.client.frames import FrameDict, Refused

__all__ = ["AUTH_ID", "LINK_ERRORS", "AuthMode", "dial"]

LINK_ERRORS = (OSError, TimeoutError, ConnectionError, websockets.WebSocketException)
"""What a failed attempt to open a link raises, besides :class:`Refused`."""

AuthMode = Literal["frame", "header"]
"""How the token reaches the server: in the ``auth`` first frame (out of URLs and access
logs), or as ``Authorization: Bearer`` on the upgrade request."""

AUTH_ID: str = "auth"
"""The ``id`` of the ``auth`` frame: a string, so it never meets a request's integer id."""

NO_IDENTITY = 4003


async def dial(
    url: str, token: str | None, timeout: float, auth: AuthMode = "frame"
) -> tuple[ClientConnection, FrameDict]:
    """Open a WebSocket and read its ``welcome``; :class:`Refused` when the server refused
    the handshake with an HTTP status, or the token of the ``auth`` frame (code 4003);
    ``ConnectionError`` when the first frame is another."""
    headers = {"Authorization": f"Bearer {token}"} if token and auth == "header" else None
    try:
        ws = await websockets.connect(
            url,
            additional_headers=headers,
            ping_interval=None,  # the protocol's ping does this, at the server's pace
            close_timeout=1,
            max_size=None,
            open_timeout=timeout,
        )
    except websockets.InvalidStatus as exc:
        response = exc.response
        reason = response.body.decode("utf-8", "replace").strip() if response.body else ""
        raise Refused(response.status_code, response.headers.get("Retry-After"), reason) from None
    try:
        async with asyncio.timeout(timeout):
            welcome = await _welcome(ws, token if auth == "frame" else None)
    except BaseException:
        await ws.close()
        raise
    return ws, welcome


async def _welcome(ws: ClientConnection, token: str | None) -> FrameDict:
    """Send the ``auth`` frame (with a token) and read until the ``welcome``."""
    if token:
        await ws.send(json.dumps({"type": "auth", "id": AUTH_ID, "token": token}))
    try:
        frame: FrameDict = json.loads(await ws.recv())
        if frame.get("type") == "error" and frame.get("id") == AUTH_ID:
            await ws.wait_closed()  # the 4003 that follows: what the reconnect loop goes by
            raise Refused(401, None, str(frame.get("message", "")), code=NO_IDENTITY)
        if frame.get("type") != "welcome":
            raise ConnectionError(f"expected a welcome frame, got {frame!r}")
        if token and frame.get("id") != AUTH_ID:
            # Open mode: welcome came at once, and the auth frame is answered bad_request.
            reply: FrameDict = json.loads(await ws.recv())
            if reply.get("id") != AUTH_ID:
                raise ConnectionError(f"expected the reply to the auth frame, got {reply!r}")
    except websockets.ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == NO_IDENTITY:
            raise Refused(401, None, exc.rcvd.reason, code=NO_IDENTITY) from None
        raise
    return frame
