"""Opening one WebSocket to the server: the handshake and its ``welcome`` frame."""

from __future__ import annotations

import asyncio
import json

import websockets
from websockets.asyncio.client import ClientConnection

from wshub.client.frames import FrameDict, Refused

__all__ = ["LINK_ERRORS", "dial"]

LINK_ERRORS = (OSError, TimeoutError, ConnectionError, websockets.WebSocketException)
"""What a failed attempt to open a link raises, besides :class:`Refused`."""


async def dial(url: str, token: str | None, timeout: float) -> tuple[ClientConnection, FrameDict]:
    """Open a WebSocket and read its ``welcome``; :class:`Refused` when the server refused
    the handshake with an HTTP status, ``ConnectionError`` when the first frame is another."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
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
        welcome: FrameDict = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if welcome.get("type") != "welcome":
            raise ConnectionError(f"expected a welcome frame, got {welcome!r}")
    except BaseException:
        await ws.close()
        raise
    return ws, welcome
