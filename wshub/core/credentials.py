"""A connection's credentials: what its tokens let it do now, and until when.

The connection token gives the ``join``/``publish`` patterns (kept on the connection as its
:class:`~wshub.core.permissions.Permissions`), an end (``exp``: the 4001 close) and the
``channels`` the server joined it to. Beyond the patterns, a connection may be in a channel
because a subscription token allowed that join (until the token's ``exp``), because its
token's ``channels`` claim named it, or because the server put it there (``/api/subscribe``,
``hub.subscribe``). A ``refresh`` replaces the token's part at once; the subscription tokens
and the server's placements stay.

One timer per subscription token with an ``exp``, cancelled when the channel is left or the
connection ends; nothing polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from msgspec import UNSET

from wshub import protocol
from wshub.core.auth import Identity, TokenRejected, TokenVerifier
from wshub.core.hooks import Authorize
from wshub.protocol import ErrorCode, FrameError

if TYPE_CHECKING:
    from wshub.core.connection import Connection

__all__ = ["Credentials", "may_stay", "subscription_grant"]


async def subscription_grant(
    conn: Connection, frame: protocol.Join, authorize: Authorize | None
) -> float | None:
    """The end of a ``join``'s subscription token (None: no ``exp``), or ``forbidden`` saying
    why it does not allow the join. The connection's own patterns are not asked; the
    ``authorize`` hook still is. Only for a connection with credentials and a ``token``."""
    assert frame.token is not UNSET and conn.credentials is not None
    fid = protocol.frame_id(frame)
    try:
        expires = conn.credentials.verifier.verify_subscription(
            frame.token, conn.user, frame.channel
        )
    except TokenRejected as exc:
        raise FrameError(ErrorCode.FORBIDDEN, f"subscription token refused: {exc}", fid) from None
    if authorize is not None and not await authorize(conn.user, "join", frame.channel):
        raise FrameError(ErrorCode.FORBIDDEN, f"no permission to join {frame.channel!r}", fid)
    return expires


def may_stay(conn: Connection, channel: str) -> bool:
    """Whether the connection's tokens (or the server) still let it be in ``channel``: its
    join patterns, or anything its :class:`Credentials` allow. Open mode allows everything."""
    permissions, creds = conn.permissions, conn.credentials
    return (
        permissions is None
        or permissions.allows("join", channel)
        or (creds is not None and creds.allows(channel))
    )


class Credentials:
    """The tokens behind one connection; None on a connection in open mode."""

    __slots__ = ("_on_expiry", "_tokens", "claimed", "expires", "placed", "verifier")

    def __init__(
        self,
        verifier: TokenVerifier,
        identity: Identity,
        on_expiry: Callable[[str], None],
    ) -> None:
        self.verifier = verifier
        """Checks the connection's ``refresh`` tokens and ``join`` subscription tokens."""
        self.expires = identity.expires
        """The connection token's end (Unix seconds), or None."""
        self.claimed: tuple[str, ...] = identity.channels
        """The connection token's ``channels`` claim, in its order (a short list)."""
        self.placed: set[str] = set()
        """Channels the server joined this connection to, until it leaves them."""
        self._tokens: dict[str, asyncio.TimerHandle | None] = {}
        self._on_expiry = on_expiry

    def replace(self, identity: Identity) -> None:
        """A refreshed connection token: its end and ``channels`` claim replace the old."""
        self.expires = identity.expires
        self.claimed = identity.channels

    def grant(self, channel: str, expires: float | None) -> None:
        """A subscription token allowed a join of ``channel`` until ``expires`` (None: no end).

        A fresh token for a channel already granted replaces the old one and its end.
        """
        self._cancel(channel)
        timer = None
        if expires is not None:
            delay = max(0.0, expires - time.time())
            timer = asyncio.get_running_loop().call_later(delay, self._expired, channel)
        self._tokens[channel] = timer

    def _expired(self, channel: str) -> None:
        self._tokens.pop(channel, None)
        self._on_expiry(channel)

    def allows(self, channel: str) -> bool:
        """Whether anything but the join patterns lets the connection be in ``channel``."""
        return channel in self._tokens or channel in self.claimed or channel in self.placed

    def left(self, channel: str) -> None:
        """The connection is no longer in ``channel``: what let it in is spent."""
        self._cancel(channel)
        self.placed.discard(channel)

    def close(self) -> None:
        """The connection ended: no timer outlives it."""
        for timer in self._tokens.values():
            if timer is not None:
                timer.cancel()
        self._tokens.clear()

    def _cancel(self, channel: str) -> None:
        timer = self._tokens.pop(channel, None)
        if timer is not None:
            timer.cancel()
