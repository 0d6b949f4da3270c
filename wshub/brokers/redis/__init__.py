"""The Redis broker: pub/sub for fan-out between nodes, Lua for offsets and history, hashes for
presence, a liveness-checked listener, and bounded commands."""

from __future__ import annotations

from wshub.brokers.redis.broker import RedisBroker

__all__ = ["RedisBroker"]
