"""Dead-link detection: a proxy or a NAT can drop a connection silently, with no close frame
and no reset, so only an unanswered protocol ``ping`` tells the client the link is gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection

from wshub.client.frames import ConnectionLost

__all__ = ["watch"]

log = logging.getLogger("wshub.client")


async def watch(
    ws: ClientConnection, interval: float, ping: Callable[[float], Awaitable[object]], url: str
) -> None:
    """Ping every ``interval`` seconds; abort the link when no pong comes within one more,
    so that the reader ends and the link reconnects. ``ping(timeout)`` sends one ping."""
    while True:
        await asyncio.sleep(interval)
        try:
            await ping(interval)
        except (TimeoutError, ConnectionLost):
            log.info("no pong within %.1f s: the link to %s is dead", interval, url)
            ws.transport.abort()
            return
