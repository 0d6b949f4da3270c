"""What the core reports as it works, and a sink that ignores it.

The core counts events, never how they are exported: the app hands it a sink (Prometheus and
the dashboard's totals, :class:`wshub.app.metrics.HubMetrics`), and a core used on its own gets
:class:`NoMetrics`. Each call is per event, never per subscriber: a publication fanned out to
ten thousand connections is one call with ``10000``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Metrics", "NoMetrics"]


class Metrics(Protocol):
    """The events a hub reports. Called on the event loop; must not block."""

    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...

    def joined(self) -> None: ...

    def message_published(self, broker_seconds: float) -> None:
        """One publication, and how long the broker took to take it."""

    def recovered(self, broker_seconds: float, replayed: int) -> None:
        """A join read the channel's position (and ``replayed`` missed publications)."""

    def fanned_out(self, subscribers: int, latency: float) -> None:
        """One publication queued for ``subscribers`` local connections, ``latency`` seconds
        after it was published."""

    def direct_sent_once(self, broker_seconds: float) -> None: ...

    def direct_fanned_out(self, connections: int) -> None:
        """One direct message queued for ``connections`` local connections of its user."""

    def error(self, code: str) -> None:
        """An error frame sent to a client, by its code."""

    def slow_consumer(self) -> None:
        """A connection dropped with 4008 because its queue overflowed."""


class NoMetrics:
    """Counts nothing: the sink of a core that nobody scrapes."""

    __slots__ = ()

    def connection_opened(self) -> None:
        pass

    def connection_closed(self) -> None:
        pass

    def joined(self) -> None:
        pass

    def message_published(self, broker_seconds: float) -> None:
        pass

    def recovered(self, broker_seconds: float, replayed: int) -> None:
        pass

    def fanned_out(self, subscribers: int, latency: float) -> None:
        pass

    def direct_sent_once(self, broker_seconds: float) -> None:
        pass

    def direct_fanned_out(self, connections: int) -> None:
        pass

    def error(self, code: str) -> None:
        pass

    def slow_consumer(self) -> None:
        pass
