"""The one road of every publication and direct message: clients, the library and the HTTP
API all publish through :class:`Publisher`, so each is counted and timed once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from msgspec import Raw

from wshub import protocol
from wshub.brokers.base import Broker
from wshub.core import serving
from wshub.core.metrics import Metrics
from wshub.core.serving import bounded
from wshub.model.config import Settings
from wshub.model.publication import Publication

__all__ = ["Publisher"]


class Publisher:
    __slots__ = ("_broker", "_metrics", "_settings", "_start")

    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        metrics: Metrics,
        start: Callable[[], Awaitable[None]],
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._metrics = metrics
        self._start = start

    async def publish(self, channel: str, data: Any, idempotency_key: str | None) -> int:
        """The library's publish (see :meth:`wshub.core.hub.HubCore.publish`)."""
        if not protocol.is_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        if idempotency_key is not None and not protocol.is_idempotency_key(idempotency_key):
            raise ValueError("idempotency_key must be 1 to 64 characters")
        await self._start()
        timeout = self._settings.reply_timeout
        publishing = self.publish_raw(channel, msgspec.json.encode(data), None, idempotency_key)
        return (await serving.within(serving.deadline_in(timeout), timeout, publishing)).offset

    async def publish_raw(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None
    ) -> Publication:
        """Publish JSON bytes as they are. The caller checks the channel name and the key,
        and starts the hub."""
        started = time.perf_counter()
        pub = await bounded(
            self._broker.publish(channel, data, sender, idempotency_key), effect=True
        )
        self._metrics.message_published(time.perf_counter() - started)
        return pub

    async def send(self, user: str, data: Any, sender: str | None) -> None:
        """The library's send (see :meth:`wshub.core.hub.HubCore.send`)."""
        await self._start()
        timeout = self._settings.reply_timeout
        sending = self.send_direct(user, Raw(msgspec.json.encode(data)), sender)
        await serving.within(serving.deadline_in(timeout), timeout, sending)

    async def send_direct(self, user: str, data: Raw, sender: str | None) -> None:
        direct = protocol.Direct(from_=sender, data=data, ts=int(time.time() * 1000))
        started = time.perf_counter()
        await bounded(self._broker.send(user, protocol.encode(direct)), effect=True)
        self._metrics.direct_sent_once(time.perf_counter() - started)
