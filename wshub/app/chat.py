"""The plain-text chat of FastAPI's WebSocket tutorial, on the hub: ``/ws/{client_id}``.

Every line a client sends goes to everyone in the chat, itself included, as the tutorial's
English sentences. It is one of the server's own channels (:data:`CHAT_CHANNEL`): no offsets,
no history, no presence, no direct messages.
"""

from __future__ import annotations

import contextlib

from wshub.brokers.base import BrokerUnavailable
from wshub.core.connection import Connection
from wshub.core.hub import HubCore

__all__ = ["CHAT_CHANNEL", "join", "leave", "say"]

CHAT_CHANNEL = "$chat"
"""The chat's broadcast channel; ``$`` keeps it out of reach of protocol clients."""


async def join(hub: HubCore, conn: Connection) -> None:
    await hub.listen(conn, CHAT_CHANNEL)


async def say(hub: HubCore, conn: Connection, text: str) -> None:
    conn.push(f"You wrote: {text}")
    await hub.broker.emit(CHAT_CHANNEL, f"Client #{conn.user} says: {text}")


async def leave(hub: HubCore, conn: Connection, code: int | None = None) -> None:
    await hub.detach(conn, code)
    with contextlib.suppress(BrokerUnavailable):
        await hub.broker.emit(CHAT_CHANNEL, f"Client #{conn.user} left the chat")
