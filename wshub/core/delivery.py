"""What the broker hands this node, handed on to the local connections: the hub's BrokerSink.

Fan-out is local and synchronous: the broker hands a node each publication at most once, and
the one encoded frame is pushed onto each subscriber's queue with no await in between.
Publications go through the :class:`~wshub.core.gaps.GapFiller`, which keeps each channel's
stream whole: what a shared broker lost shows as a gap in offsets, filled from history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from wshub.brokers.base import Broker
from wshub.core.channel import LocalChannel
from wshub.core.connection import Connection
from wshub.core.gaps import GapFiller
from wshub.core.metrics import Metrics
from wshub.core.server_subscriptions import ServerSubscriptions
from wshub.model.publication import Publication
from wshub.protocol import CloseCode
from wshub.protocol.wire import SharedFrame

__all__ = ["Delivery"]


class Delivery:
    """Implements :class:`~wshub.brokers.base.BrokerSink` over this node's channels and users."""

    __slots__ = ("_channels", "_gaps", "_metrics", "_server_subscriptions", "_users")

    def __init__(
        self,
        broker: Broker,
        channels: dict[str, LocalChannel],
        users: dict[str, dict[Connection, None]],
        metrics: Metrics,
        spawn: Callable[[Awaitable[Any]], None],
        server_subscriptions: ServerSubscriptions,
    ) -> None:
        self._server_subscriptions = server_subscriptions
        self._channels = channels
        self._users = users
        self._metrics = metrics
        self._gaps = GapFiller(broker, channels, spawn)

    def deliver(self, pub: Publication) -> None:
        self._gaps.deliver(pub)

    def deliver_event(self, channel: str, frame: str, exclude_user: str | None) -> None:
        ch = self._channels.get(channel)
        if ch is not None:
            ch.deliver_event(frame, exclude_user)

    def resync(self) -> None:
        """The broker may have lost deliveries (it reconnected): look for gaps everywhere."""
        self._gaps.resync()

    def deliver_direct(self, user: str, frame: str) -> None:
        conns = self._users.get(user)
        if conns:
            shared = SharedFrame(frame)
            for conn in conns:
                conn.push_frame(shared)
            self._metrics.direct_fanned_out(len(conns))

    def deliver_kick(self, user: str) -> None:
        # 1008, not 1000: an operator removed this user, and a client should not come straight
        # back (docs/protocol.md, "Close codes": on 1008 a client does not reconnect by itself).
        for conn in list(self._users.get(user, ())):
            conn.close(CloseCode.POLICY_VIOLATION, "disconnected by the server")

    def deliver_subscribe(self, user: str, channel: str) -> None:
        self._server_subscriptions.deliver_subscribe(user, channel)

    def deliver_unsubscribe(self, user: str, channel: str) -> None:
        self._server_subscriptions.deliver_unsubscribe(user, channel)
