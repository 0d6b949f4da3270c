"""Brokers, chosen by URL scheme and imported only when chosen."""

from __future__ import annotations

from urllib.parse import urlsplit

from wshub.brokers.base import (
    Broker,
    BrokerOps,
    BrokerSink,
    BrokerTimeout,
    BrokerUnavailable,
    FullBroker,
    PresentUser,
)
from wshub.model.config import Settings

__all__ = [
    "Broker",
    "BrokerOps",
    "BrokerSink",
    "BrokerTimeout",
    "BrokerUnavailable",
    "FullBroker",
    "PresentUser",
    "create_broker",
    "is_shared",
]

SCHEMES = ("memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def create_broker(url: str, settings: Settings, node: str | None = None) -> FullBroker:
    """The broker for ``url``: ``memory://`` (one process), or ``redis://HOST:PORT/DB``
    (also ``rediss://`` for TLS, ``redis://:PASSWORD@HOST``, ``unix:///path``), or a Redis
    Cluster: ``redis+cluster://HOST:PORT[,HOST:PORT...]`` (``rediss+cluster://`` for TLS)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from wshub.brokers.memory import MemoryBroker

        return MemoryBroker(
            settings.history_size, settings.history_ttl, idempotency_ttl=settings.idempotency_ttl
        )
    if scheme in SCHEMES[1:]:
        from wshub.brokers.redis import RedisBroker

        return RedisBroker(url, settings, node)
    raise ValueError(f"unknown broker URL {url!r}: expected one of {', '.join(SCHEMES)}://")


def is_shared(url: str) -> bool:
    """Whether a broker URL lets several processes share one hub."""
    return urlsplit(url).scheme != "memory"
