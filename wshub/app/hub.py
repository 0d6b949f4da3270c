"""``wshub.Hub``: the hub's core composed for a FastAPI app, and what a library user imports.

The core (:class:`~wshub.core.hub.HubCore`) is given its collaborators; this is where they are
chosen: the broker from a URL, Prometheus metrics, and the fast-path writer where the server
offers it. ``router`` mounts the WebSocket endpoints into an app.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from wshub.app.channel_routes import ChannelRoute, ChannelRoutes
from wshub.app.metrics import HubMetrics
from wshub.brokers import BrokerOps, FullBroker, create_broker
from wshub.core.hooks import Authorize, OnConnect, OnDisconnect, OnPublish
from wshub.core.hub import HubCore
from wshub.model.config import Settings
from wshub.transport.direct import Writers

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["Hub"]


class Hub(HubCore):
    """A real-time messaging hub. Mount ``hub.router`` into a FastAPI app.

    >>> hub = Hub("memory://")                         # doctest: +SKIP
    >>> app.include_router(hub.router)                 # doctest: +SKIP
    >>> await hub.publish("orders:42", {"status": "shipped"})  # doctest: +SKIP

    ``broker`` is a URL (``memory://``, ``redis://...``) or a broker object that implements
    both :class:`~wshub.brokers.Broker` and :class:`~wshub.brokers.BrokerOps`.
    """

    metrics: HubMetrics

    def __init__(
        self,
        broker: str | FullBroker = "memory://",
        settings: Settings | None = None,
        *,
        authorize: Authorize | None = None,
        on_publish: OnPublish | None = None,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> None:
        settings = settings or Settings()
        settings.validate()
        # One id for the node everywhere: a broker object that has its own (a RedisBroker
        # built by hand) names the node in the cluster's presence, so welcome says the same.
        node = getattr(broker, "node", None) or secrets.token_hex(4)
        self.broker_url = broker if isinstance(broker, str) else type(broker).__name__
        full = create_broker(broker, settings, node) if isinstance(broker, str) else broker
        self.ops: BrokerOps = full
        """The broker's operations and statistics, for ``/api`` and ``/admin``; the core is
        given only its delivery (``self.broker``)."""
        super().__init__(
            full,
            settings,
            node=node,
            metrics=HubMetrics(),
            writers=Writers(settings.fast_path),
            authorize=authorize,
            on_publish=on_publish,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
        )
        self._router: APIRouter | None = None
        self.channel_routes = ChannelRoutes()
        """The routes :meth:`channel` declares; the core asks them first."""
        self.hooks.routes = self.channel_routes

    def channel(self, pattern: str, model: Any = None, *, description: str = "") -> ChannelRoute:
        """Declare a channel route: ``orders = hub.channel("orders:{order_id}", model=Event)``.

        ``{name}`` stands for one ``:``-separated part of a channel name. Publications to a
        matching channel must validate as ``model``; ``@orders.can_join`` and
        ``@orders.can_publish`` decorate the checks, which take the pattern's parameters and
        FastAPI dependencies (see docs/library.md).
        """
        return self.channel_routes.add(pattern, model, description)

    async def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> int:
        """As :meth:`HubCore.publish`; on a channel route with a model, ``data`` (an instance
        of it, or its JSON form) is validated first: :class:`~wshub.InvalidData` if not."""
        validated = self.channel_routes.payload(channel, data, ("data",))
        if validated is not None:
            data = Raw(validated)
        return await super().publish(channel, data, idempotency_key=idempotency_key)

    @property
    def router(self) -> APIRouter:
        """A FastAPI router with ``/ws``, ``/ws/{client_id}``, ``/sse`` and ``/sse/frame``,
        starting the hub with the app."""
        if self._router is None:
            from wshub.app.routes import build_router

            self._router = build_router(self)
        return self._router
