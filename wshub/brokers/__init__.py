"""Brokers, chosen by URL scheme and imported only when chosen."""

from __future__ import annotations

from urllib.parse import urlsplit

from wshub.brokers.base import Broker, BrokerSink, BrokerUnavailable, Member
from wshub.config import Settings

__all__ = ["Broker", "BrokerSink", "BrokerUnavailable", "Member", "create_broker"]

SCHEMES = ("memory",)


def create_broker(url: str, settings: Settings) -> Broker:
    """The broker for ``url``: ``memory://`` (one process)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from wshub.brokers.memory import MemoryBroker

        return MemoryBroker(settings.history_size, settings.history_ttl)
    raise ValueError(f"unknown broker URL {url!r}: expected one of {', '.join(SCHEMES)}://")
