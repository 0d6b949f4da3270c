"""Server-side subscriptions: channels the server joins a connection to, or takes it out of.

In: the token's ``channels`` claim (right after ``welcome``), and ``hub.subscribe(user,
channel)`` / ``POST /api/subscribe`` for every connection of a user on every node; each is
told with ``subscribed`` and its position, then gets the channel's messages. Out:
``hub.unsubscribe`` / ``POST /api/unsubscribe`` (reason ``server``), a refreshed token that no
longer allows a channel (``permissions``, see :mod:`wshub.core.refresh`), and a subscription
token's ``exp`` (``expired``). Either way the channel is left as by a ``leave``: presence and
``member_left`` included.

A channel joined this way is like any other: the client may ``leave`` it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Literal, Protocol

from wshub import protocol
from wshub.brokers.base import BrokerUnavailable
from wshub.core import serving
from wshub.core.connection import Connection
from wshub.core.credentials import may_stay
from wshub.model.config import Settings
from wshub.protocol import ErrorCode, FrameError, FrameId

__all__ = ["Node", "Reason", "ServerSubscriptions"]

Reason = Literal["server", "permissions", "expired"]


class Node(Protocol):
    """What the server's joins and leaves need of the node they happen on."""

    @property
    def settings(self) -> Settings: ...

    async def join_channel(
        self, conn: Connection, frame: protocol.Join, *, by_server: bool = False
    ) -> None:
        """Join as a ``join`` frame would; ``by_server``: asking no permission, answered
        ``subscribed``, and nothing for a channel already joined."""

    async def leave_channel(self, conn: Connection, channel: str) -> None:
        """Leave a channel already taken out of ``conn.channels`` (locally before any await)."""

    def connections_of(self, user: str) -> list[Connection]:
        """The user's protocol connections on this node."""

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in a task of the node's."""

    def send_error(
        self, conn: Connection, code: ErrorCode, message: str, frame_id: FrameId | None = None
    ) -> None:
        """Queue an ``error`` frame for a connection (and count it)."""


class ServerSubscriptions:
    """One hub's joins and leaves made by the server rather than by the client."""

    __slots__ = ("_hub",)

    def __init__(self, node: Node) -> None:
        self._hub = node

    async def join_claimed(self, conn: Connection) -> None:
        """The connection token's ``channels``, joined in order right after ``welcome``."""
        creds = conn.credentials
        for channel in () if creds is None else creds.claimed:
            await self.join(conn, channel, placed=False)

    async def join(self, conn: Connection, channel: str, *, placed: bool = True) -> None:
        """Join one connection to ``channel`` without asking its permissions: ``subscribed``,
        then the channel's messages. Already in it: nothing changes, nothing is sent.

        A join that fails (the channel limit, the broker) is told to the client as an
        ``error`` without ``id`` naming the channel, since no frame of its own asked for it.
        """
        hub = self._hub
        if conn.closing or channel in conn.channels:
            if placed and conn.credentials is not None and channel in conn.channels:
                conn.credentials.placed.add(channel)
            return
        timeout = hub.settings.reply_timeout
        try:
            await serving.within(
                serving.deadline_in(timeout),
                timeout,
                hub.join_channel(conn, protocol.Join(channel=channel), by_server=True),
            )
        except FrameError as exc:
            hub.send_error(conn, exc.code, f"not subscribed to {channel!r}: {exc.message}")
            return
        except BrokerUnavailable:
            message = f"not subscribed to {channel!r}: broker unreachable"
            hub.send_error(conn, ErrorCode.UNAVAILABLE, message)
            return
        if placed and conn.credentials is not None and channel in conn.channels:
            conn.credentials.placed.add(channel)

    async def leave(self, conn: Connection, channel: str, reason: Reason) -> None:
        """Take one connection out of ``channel``, telling it why with ``unsubscribed``."""
        if channel not in conn.channels:
            return
        del conn.channels[channel]
        if conn.credentials is not None:
            conn.credentials.left(channel)
        # Queued before the channel is left below, with no await between: every message the
        # connection gets for the channel comes before its ``unsubscribed``, none after.
        conn.push(protocol.encode(protocol.Unsubscribed(channel=channel, reason=reason)))
        await self._hub.leave_channel(conn, channel)

    def expired(self, conn: Connection, channel: str) -> None:
        """A subscription token for ``channel`` ended: leave it, unless something else still
        lets the connection be there (its join patterns, its token's ``channels``)."""
        if conn.closing or channel not in conn.channels or may_stay(conn, channel):
            return
        self._hub.spawn(self.leave(conn, channel, "expired"))

    def deliver_subscribe(self, user: str, channel: str) -> None:
        for conn in self._hub.connections_of(user):
            self._hub.spawn(self.join(conn, channel))

    def deliver_unsubscribe(self, user: str, channel: str) -> None:
        for conn in self._hub.connections_of(user):
            self._hub.spawn(self.leave(conn, channel, "server"))
