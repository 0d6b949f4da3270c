"""The hub's core: one node's connections, channels, presence and direct delivery.

:class:`HubCore` is a facade over parts with one job each, composed here and nowhere else:

- :mod:`~wshub.core.lifecycle`: start, drain, stop;
- :mod:`~wshub.core.admission`: whether one more connection is taken, and why not;
- :mod:`~wshub.core.registry`: the connections, their log lines and hooks, users' indexes;
- :mod:`~wshub.core.handling`: a client's frames, with limits and authorization;
- :mod:`~wshub.core.subscriptions`: joins, leaves and presence;
- :mod:`~wshub.core.delivery`: what the broker hands the node, fanned out, gaps repaired;
- :mod:`~wshub.core.publishing`: the one road of every publication and direct message;
- :mod:`~wshub.core.server_subscriptions`: the joins and leaves the server makes (a token's
  ``channels``, :meth:`HubCore.subscribe`, a refresh, a subscription token's end).

It talks to a :class:`~wshub.brokers.base.Broker`, a :class:`~wshub.core.metrics.Metrics`
sink and a :class:`~wshub.core.connection.ConnectionFactory`, all given to it, and to
connections: never to sockets, HTTP, ASGI or Redis. ``wshub.Hub`` (``wshub.app.hub``) is the
composition for a FastAPI app.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

from wshub import protocol
from wshub.brokers.base import Broker
from wshub.core import serving
from wshub.core.admission import Admission, Refused
from wshub.core.auth import Identity, TokenVerifier
from wshub.core.clock import Clock
from wshub.core.connection import AsgiConnection, Connection, ConnectionFactory, Socket
from wshub.core.credentials import Credentials
from wshub.core.delivery import Delivery
from wshub.core.handling import FrameHandler
from wshub.core.hooks import Authorize, Hooks, OnConnect, OnDisconnect, OnPublish
from wshub.core.lifecycle import Lifecycle
from wshub.core.metrics import Metrics, NoMetrics
from wshub.core.permissions import Permissions
from wshub.core.publishing import Publisher
from wshub.core.read_budget import ReadBudget
from wshub.core.registry import Registry
from wshub.core.server_subscriptions import ServerSubscriptions
from wshub.core.subscriptions import Subscriptions
from wshub.core.tasks import Tasks
from wshub.model.config import Settings
from wshub.model.publication import Publication
from wshub.protocol import ErrorCode, FrameId

__all__ = ["HubCore", "Refused"]


class HubCore:
    """One node of a real-time messaging hub, given its broker, metrics sink and writers.

    Hooks (see :mod:`wshub.core.hooks`) are plain async callables: ``authorize`` decides joins
    and publications beyond a connection's own permissions, ``on_publish`` validates or
    transforms what clients publish, ``on_connect`` and ``on_disconnect`` observe protocol
    connections.
    """

    def __init__(
        self,
        broker: Broker,
        settings: Settings | None = None,
        *,
        node: str | None = None,
        metrics: Metrics | None = None,
        writers: ConnectionFactory = AsgiConnection,
        authorize: Authorize | None = None,
        on_publish: OnPublish | None = None,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> None:
        s = self.settings = settings or Settings()
        s.validate()
        self.node = node or secrets.token_hex(4)
        """This node's id: in ``welcome.server.node``, and in the shared broker's presence."""
        self.broker = broker
        self.metrics: Metrics = metrics or NoMetrics()
        self.hooks = Hooks(authorize, on_publish, on_connect, on_disconnect)
        self._clock = Clock()
        self._tasks = Tasks()
        reads = ReadBudget(s.unjoined_read_rate, s.max_channels, lambda: self._clock.now())
        self._subscriptions = Subscriptions(broker, s, self.metrics)
        self._server_subscriptions = ServerSubscriptions(self)
        self._registry = Registry(
            broker, s, self.metrics, self.hooks, self._clock, writers, self._tasks.spawn,
            self._subscriptions, reads,
        )  # fmt: skip
        self._delivery = Delivery(
            broker, self._subscriptions.channels, self._registry.users, self.metrics,
            self._tasks.spawn, self._server_subscriptions,
        )  # fmt: skip
        self._lifecycle = Lifecycle(broker, self._delivery, self._registry.attached, self._tasks)
        self.awaiting_auth = self._lifecycle.awaiting_auth  # connections before their auth
        self._admission = Admission(s, lambda: self._lifecycle.draining)
        self._publisher = Publisher(broker, s, self.metrics, self.start)
        self._frames = FrameHandler(
            broker, s, self.metrics, self.hooks, self._clock, reads, self._subscriptions,
            self._publisher, self._server_subscriptions,
        )  # fmt: skip

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the broker. Idempotent; the router's lifespan calls it."""
        await self._lifecycle.start()

    async def stop(self) -> None:
        """Close every connection and the broker."""
        await self._lifecycle.stop()

    async def drain(self, seconds: float) -> None:
        """Take this node out of service gracefully, for a shutdown.

        New handshakes are refused from now on (:attr:`Refused.DRAINING`). Every connection
        is closed with 1001 after the frames already queued for it, in batches spread over
        ``seconds`` so that the clients do not all reconnect to the other nodes at the same
        moment. Peers that do not complete the close within the close timeout are cut off.
        Each connection's end removes it from presence as usual; :meth:`stop` then leaves the
        cluster.
        """
        await self._lifecycle.drain(seconds, self.settings.close_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start the hub for as long as an app runs (an ASGI lifespan)."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @property
    def serving(self) -> bool:
        """Whether the broker is started and connections can be served (``/healthz``)."""
        return self._lifecycle.started

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun: handshakes are refused, the node is not ready."""
        return self._lifecycle.draining

    @property
    def accepting(self) -> bool:
        """Ready to accept connections: started, broker connected, not draining."""
        return self.serving and not self.draining and self.broker.ready

    # --- admission and figures -------------------------------------------------------------

    def admit(self, user: str) -> Refused | None:
        """Count a connection in, or say why not. Synchronous, so the cap cannot race."""
        return self._admission.admit(user)

    def admission(self, user: str) -> Refused | None:
        """Why a connection of ``user`` would be refused now, or None; counts nothing."""
        return self._admission.check(user)

    def release(self, user: str) -> None:
        """Count a connection out; every successful :meth:`admit` is paired with one."""
        self._admission.release(user)

    @property
    def connection_count(self) -> int:
        return self._admission.admitted

    @property
    def user_count(self) -> int:
        """Distinct users with at least one protocol connection on this node."""
        return len(self._registry.users)

    def queue_depths(self) -> Iterator[int]:
        """Frames waiting in each connection's queue, for the queue-depth gauges."""
        return (conn.queued for conn in self._registry.attached)

    def channel_counts(self) -> dict[str, int]:
        """Local subscribers per channel on this node."""
        return self._subscriptions.counts()

    # --- connections -----------------------------------------------------------------------

    def connect(
        self,
        user: str,
        socket: Socket,
        kind: str = "ws",
        *,
        permissions: Permissions | None = None,
        expires: float | None = None,
        peer: str = "",
        verifier: TokenVerifier | None = None,
        channels: tuple[str, ...] = (),
    ) -> Connection:
        """Create and register a connection for an admitted user, with its writer started.

        ``permissions`` limit the channels it may use (None: all); ``expires`` (seconds since
        the Unix epoch) closes it with 4001 at that moment, when its token ends; ``peer`` is
        the client's address, for the log. ``verifier`` checks its ``refresh`` and
        subscription tokens, and ``channels`` (its token's claim) are joined by :meth:`greet`.
        """
        conn = self._registry.connect(user, socket, kind, permissions, expires, peer)
        if verifier is not None:
            identity = Identity(user, permissions, expires, channels)
            expired = self._server_subscriptions.expired
            conn.credentials = Credentials(verifier, identity, lambda ch: expired(conn, ch))
        return conn

    async def watch_direct(self, conn: Connection) -> None:
        """Make sure direct messages for the connection's user reach this node."""
        await self._registry.watch_direct(conn)

    async def greet(self, conn: Connection, frame_id: FrameId | None = None) -> None:
        """Queue the ``welcome`` frame (answering the ``auth`` frame ``frame_id``, if the
        identity came that way), tell the ``on_connect`` hook, then join the token's
        ``channels``."""
        await self._registry.greet(conn, self.node, frame_id)
        await self._server_subscriptions.join_claimed(conn)

    async def detach(self, conn: Connection, code: int | None = None) -> None:
        """Forget a connection that is over: its channels, presence and queue. Idempotent.

        ``code`` is the close code the client sent, when it closed first.
        """
        await self._registry.detach(conn, code)

    async def listen(self, conn: Connection, channel: str) -> None:
        """Give a connection the events of one of the server's own channels (``$...``)."""
        await self._subscriptions.listen(conn, channel)

    # --- frames from clients ---------------------------------------------------------------

    def handle_text(
        self, conn: Connection, text: str, deadline: float | None = None
    ) -> Coroutine[Any, Any, None]:
        """Serve one text frame from a protocol client. Never raises for bad input.

        ``deadline`` (event-loop time) bounds the broker calls made for it: see
        :mod:`wshub.core.serving`. (The handler's own coroutine, not one wrapped around it:
        this runs for every frame.)
        """
        return self._frames.handle_text(conn, text, deadline)

    def handle_binary(self, conn: Connection) -> None:
        self._frames.handle_binary(conn)

    async def allowed(self, conn: Connection, action: str, channel: str) -> bool:
        """Both the connection's own permissions and the ``authorize`` hook must agree."""
        return await self._frames.allowed(conn, action, channel)

    @property
    def clock(self) -> Callable[[], float]:
        """The clock for rate limits; tests replace it."""
        return self._clock.now

    @clock.setter
    def clock(self, now: Callable[[], float]) -> None:
        self._clock.now = now

    @property
    def sleep(self) -> Callable[[float], Awaitable[None]]:
        """How a rate-limited connection's reader is held back; tests replace it too."""
        return self._clock.sleep

    @sleep.setter
    def sleep(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._clock.sleep = sleep

    # --- the server's own joins (server_subscriptions.Node) --------------------------------

    async def join_channel(
        self, conn: Connection, frame: protocol.Join, *, by_server: bool = False
    ) -> None:
        await self._subscriptions.join(conn, frame, by_server)

    async def leave_channel(self, conn: Connection, channel: str) -> None:
        await self._subscriptions.unsubscribe(conn, channel)

    def connections_of(self, user: str) -> list[Connection]:
        return list(self._registry.users.get(user, ()))

    def spawn(self, work: Awaitable[Any]) -> None:
        self._tasks.spawn(work)

    def send_error(
        self, conn: Connection, code: ErrorCode, message: str, frame_id: FrameId | None = None
    ) -> None:
        self.metrics.error(code.value)
        conn.push(protocol.error(code, message, frame_id))

    # --- deliveries from the broker --------------------------------------------------------

    def resync(self) -> None:
        """The broker may have lost deliveries (it reconnected): look for gaps everywhere."""
        self._delivery.resync()

    # --- the library API -------------------------------------------------------------------

    async def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> int:
        """Publish ``data`` (any JSON-serialisable value) to a channel; returns its offset.

        Delivered with ``from: null``, as publications from a backend are. With
        ``idempotency_key`` (1 to 64 characters), a repeat to the same channel within the
        idempotency TTL is not published again and returns the first one's offset, so a
        caller may retry after :class:`~wshub.brokers.BrokerTimeout` (the outcome was
        unknown) or :class:`~wshub.brokers.BrokerUnavailable`. Either comes within
        ``settings.reply_timeout`` however slow the broker.
        """
        return await self._publisher.publish(channel, data, idempotency_key)

    def publish_raw(
        self,
        channel: str,
        data: bytes,
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> Coroutine[Any, Any, Publication]:
        """Publish JSON bytes as they are: the one road of every publication (clients, the
        library, the HTTP API), so each is counted and timed once. The caller checks the
        channel name and the key, and starts the hub."""
        return self._publisher.publish_raw(channel, data, sender, idempotency_key)

    async def subscribe(self, user: str, channel: str) -> None:
        """Join every connection of ``user``, on every node, to ``channel``: each gets
        ``subscribed``, then the channel's messages, whatever its permissions. Returns once
        every node has been told; a user with no connection is no error. Within
        ``settings.reply_timeout`` (else :class:`~wshub.brokers.BrokerTimeout`, or
        :class:`~wshub.brokers.BrokerUnavailable`: no node was told)."""
        await self._place(user, channel, self.broker.subscribe_user)

    async def unsubscribe(self, user: str, channel: str) -> None:
        """Take every connection of ``user``, on every node, out of ``channel``: each gets
        ``unsubscribed`` with reason ``server``. As :meth:`subscribe` otherwise."""
        await self._place(user, channel, self.broker.unsubscribe_user)

    async def _place(
        self, user: str, channel: str, tell: Callable[[str, str], Awaitable[None]]
    ) -> None:
        if not protocol.is_user_id(user):
            raise ValueError(f"invalid user id {user!r}")
        if not protocol.is_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        await self.start()
        timeout = self.settings.reply_timeout
        telling = serving.bounded(tell(user, channel), effect=True)
        await serving.within(serving.deadline_in(timeout), timeout, telling)

    async def send(self, user: str, data: Any, sender: str | None = None) -> None:
        """Send ``data`` to every connection of ``user``, on every node, within
        ``settings.reply_timeout`` (else :class:`~wshub.brokers.BrokerTimeout`: it may have
        been delivered, or :class:`~wshub.brokers.BrokerUnavailable`: it was not)."""
        await self._publisher.send(user, data, sender)
