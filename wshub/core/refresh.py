"""``refresh``: a new token for a connection, without a reconnect (PROTOCOL.md "Token refresh").

The new token must verify and name the same user; otherwise nothing changes. Its permissions,
``channels`` claim and ``exp`` replace the old ones at once: each channel the connection may no
longer be in is left (``unsubscribed``, reason ``permissions``) before the ``ack``, and the
4001 close moves to the new ``exp``. Channels still allowed are not touched, so their
messages flow on with no gap and no repeat. The new token's ``channels`` are not joined:
they only allow those channels from now on (a reconnect, or ``/api/subscribe``, joins them).
"""

from __future__ import annotations

from wshub import protocol
from wshub.core.connection import Connection
from wshub.core.credentials import may_stay
from wshub.core.identity import expires_field, refreshed
from wshub.core.server_subscriptions import ServerSubscriptions

__all__ = ["refresh"]


async def refresh(
    conn: Connection, frame: protocol.Refresh, server_subscriptions: ServerSubscriptions
) -> None:
    creds = conn.credentials
    identity = refreshed(None if creds is None else creds.verifier, conn.user, frame)
    assert creds is not None  # refreshed() refuses a connection without credentials
    conn.permissions = identity.permissions
    creds.replace(identity)
    conn.expire_at(identity.expires)
    for channel in [c for c in conn.channels if not may_stay(conn, c)]:
        await server_subscriptions.leave(conn, channel, "permissions")
    ack = protocol.Ack(
        id=protocol.reply_id(protocol.frame_id(frame)), expires=expires_field(identity.expires)
    )
    conn.push(protocol.encode(ack))
