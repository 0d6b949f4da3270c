"""The broker seams: what the hub needs to deliver messages between nodes, and what operators
and dashboards ask of the cluster.

- :class:`Broker` is delivery: lifecycle, publish and subscribe, history, presence and direct
  messages. It is all the core (:mod:`wshub.core`) calls.
- :class:`BrokerOps` is operations and statistics: channel counts, kicking a user, the nodes'
  shared figures. Only the app's ``/api`` and ``/admin`` call it.
- :class:`BrokerSink` is what a broker calls back into its node.

A broker assigns offsets, keeps history and presence, and hands each publication, event and
direct message to the :class:`BrokerSink` of every node that subscribed to it. The hub fans
out locally. A shared broker's pub/sub may lose deliveries (Redis's is at most once per node):
a node detects a missing publication by its offset and fills the gap from history, and the
broker calls :meth:`BrokerSink.resync` after anything that may have lost some. The in-memory
broker is one node's whole world and loses nothing; a shared broker (Redis) spans many nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wshub.model.history import Recovery
from wshub.model.publication import Publication

__all__ = [
    "Broker",
    "BrokerOps",
    "BrokerSink",
    "BrokerTimeout",
    "BrokerUnavailable",
    "FullBroker",
    "PresentUser",
]


class BrokerUnavailable(Exception):
    """The broker cannot be reached right now; nothing was published. Retry later."""


class BrokerTimeout(BrokerUnavailable):
    """The broker took the command but did not confirm it in time: it may or may not have run."""


@dataclass(frozen=True, slots=True)
class PresentUser:
    """One user present in a channel, cluster-wide: their latest join's ``meta`` (raw JSON)
    and how many of their connections joined. The hub sends it as a ``protocol.Member``."""

    user: str
    meta: bytes
    connections: int


class BrokerSink(Protocol):
    """What a node exposes to its broker. Called on the event loop; must not block."""

    def deliver(self, pub: Publication) -> None:
        """A publication in a channel this node subscribed to. Offsets only ever grow within
        an epoch, but a shared broker may skip some: the node fills the gap from history."""

    def deliver_event(self, channel: str, frame: str, exclude_user: str | None) -> None:
        """An ephemeral frame for a channel's subscribers (presence events, plain chat)."""

    def deliver_direct(self, user: str, frame: str) -> None:
        """A frame for every local connection of ``user``."""

    def deliver_kick(self, user: str) -> None:
        """Close every local connection of ``user``: an operator's :meth:`BrokerOps.kick`."""

    def deliver_subscribe(self, user: str, channel: str) -> None:
        """Join every local connection of ``user`` to ``channel`` (the server's decision)."""

    def deliver_unsubscribe(self, user: str, channel: str) -> None:
        """Take every local connection of ``user`` out of ``channel``."""

    def resync(self) -> None:
        """Deliveries may have been lost (the broker reconnected): check every channel."""


class Broker(Protocol):
    """Delivery between nodes: every method the core calls. Each may raise BrokerUnavailable."""

    # --- lifecycle

    async def start(self, sink: BrokerSink) -> None:
        """Connect, and from now on hand deliveries to ``sink``."""

    @property
    def ready(self) -> bool:
        """Whether the broker is connected and delivering right now (for ``/readyz``)."""

    async def close(self) -> None:
        """Leave the cluster cleanly: this node's presence entries go, connections close."""

    # --- channels: publish, subscribe, history

    async def subscribe(self, channel: str) -> None:
        """Start delivering ``channel`` to this node. Deliveries begin before it returns."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel`` to this node."""

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        """Assign the next offset, keep it in history, deliver it to every subscribed node.

        With ``idempotency_key``: if the channel had a publication with that key within the
        idempotency TTL, nothing is published and that publication's position is returned
        (offset, epoch and ts; ``data`` is this call's), atomically with respect to every node.
        """

    async def emit(self, channel: str, frame: str, exclude_user: str | None = None) -> None:
        """Deliver an ephemeral frame to the channel's subscribers on every node."""

    async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Recovery:
        """The channel's position and, when knowable, what came after ``offset``."""

    async def history(
        self, channel: str, offset: int | None, epoch: str | None, limit: int
    ) -> tuple[str, list[Publication]]:
        """The current epoch and a page of history (see ChannelLog.page)."""

    # --- presence

    async def subscribe_user(self, user: str, channel: str) -> None:
        """Have every node join ``user``'s connections to ``channel``; returns once each node
        has been told (each node's :meth:`BrokerSink.deliver_subscribe`)."""

    async def unsubscribe_user(self, user: str, channel: str) -> None:
        """Have every node take ``user``'s connections out of ``channel``; returns once each
        node has been told (:meth:`BrokerSink.deliver_unsubscribe`)."""

    async def presence_add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        """Record a connection in a channel; True when it is the user's first there."""

    async def presence_remove(self, channel: str, user: str, session: str) -> bytes | None:
        """Remove a connection; the user's meta when it was their last one there."""

    async def presence(self, channel: str) -> list[PresentUser]:
        """Everyone in a channel, cluster-wide."""

    # --- direct messages

    async def watch(self, user: str) -> None:
        """Start delivering direct messages for ``user`` to this node."""

    async def unwatch(self, user: str) -> None:
        """Stop delivering direct messages for ``user`` to this node."""

    async def send(self, user: str, frame: str) -> None:
        """Deliver a frame to every connection of ``user`` on every node."""


class BrokerOps(Protocol):
    """Operations and statistics, for ``/api`` and ``/admin``; the core never calls them.
    Every method may raise BrokerUnavailable."""

    async def channels(self) -> dict[str, int]:
        """Channels with at least one joined connection, and how many, cluster-wide."""

    async def kick(self, user: str) -> None:
        """Close every connection of ``user`` on every node (each node's
        :meth:`BrokerSink.deliver_kick`)."""

    async def share_stats(self, node: str, stats: bytes, ttl: float) -> None:
        """Publish this node's figures (JSON) for the dashboards of every node, for ``ttl`` s."""

    async def cluster_stats(self) -> list[bytes]:
        """The figures every live node shared, this one's included."""


class FullBroker(Broker, BrokerOps, Protocol):
    """Both seams: what a hub served with ``/api`` and ``/admin`` holds. The built-in brokers
    (memory and Redis) are full brokers."""
