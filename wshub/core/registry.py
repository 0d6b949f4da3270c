"""The connections of this node: opened with their writer, logged, greeted, and forgotten.

One line per connection open and close goes to ``wshub.connections`` (INFO, so
``--log-level warning`` silences it). The user index is what direct messages are routed by.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from wshub import __version__, protocol
from wshub.brokers.base import Broker, BrokerUnavailable
from wshub.core.clock import Clock
from wshub.core.connection import Connection, ConnectionFactory, Socket
from wshub.core.hooks import Hooks
from wshub.core.identity import expires_field
from wshub.core.metrics import Metrics
from wshub.core.permissions import Permissions
from wshub.core.ratelimit import RateLimiter
from wshub.core.read_budget import ReadBudget
from wshub.core.subscriptions import Subscriptions
from wshub.model.config import Settings

__all__ = ["CLOSE_NAMES", "Registry"]

log = logging.getLogger("wshub.core.hub")
conn_log = logging.getLogger("wshub.connections")
"""One line per connection open and close; INFO, so ``--log-level warning`` silences it."""

CLOSE_NAMES: dict[int, str] = {
    1000: "normal",
    1001: "going away",
    1003: "unsupported data",
    1005: "no status",
    1006: "abnormal",
    1008: "policy violation",
    1009: "too big",
    1011: "internal error",
    1012: "service restart",
    4001: "token expired",
    4003: "no identity",
    4008: "slow consumer",
}


class Registry:
    """Every connection attached to this node, and each user's protocol connections."""

    __slots__ = (
        "_broker",
        "_clock",
        "_hooks",
        "_metrics",
        "_reads",
        "_settings",
        "_spawn",
        "_subscriptions",
        "_writers",
        "attached",
        "users",
    )

    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        metrics: Metrics,
        hooks: Hooks,
        clock: Clock,
        writers: ConnectionFactory,
        spawn: Callable[[Awaitable[Any]], None],
        subscriptions: Subscriptions,
        reads: ReadBudget,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._metrics = metrics
        self._hooks = hooks
        self._clock = clock
        self._writers = writers
        self._spawn = spawn
        self._subscriptions = subscriptions
        self._reads = reads
        self.attached: dict[Connection, None] = {}
        self.users: dict[str, dict[Connection, None]] = {}
        """Protocol connections by user: where a direct message for the user goes."""

    def connect(
        self,
        user: str,
        socket: Socket,
        kind: str,
        permissions: Permissions | None,
        expires: float | None,
        peer: str,
    ) -> Connection:
        s = self._settings
        rate = RateLimiter(s.rate_limit, self._clock.now()) if s.rate_limit > 0 else None
        session = secrets.token_hex(8)
        conn_log.info(
            "connection open",
            extra={"event": "open", "session": session, "user": user, "kind": kind, "peer": peer},
        )
        conn = self._writers(
            session,
            user,
            socket,
            s.queue_size,
            self._overflowed,
            rate,
            kind,
            permissions,
            peer=peer,
            queue_bytes=s.queue_bytes,
        )
        self.attached[conn] = None
        if kind == "ws":  # the plain-text chat takes no direct messages
            self.users.setdefault(user, {})[conn] = None
        conn.start()
        self._metrics.connection_opened()
        if expires is not None:
            conn.expire_at(expires)
        return conn

    async def watch_direct(self, conn: Connection) -> None:
        """Make sure direct messages for the connection's user reach this node."""
        conns = self.users.get(conn.user)
        if conns is not None and len(conns) == 1:
            try:
                await self._broker.watch(conn.user)
            except BrokerUnavailable:
                log.warning("broker unavailable: direct messages to %s may not arrive", conn.user)

    def welcome(self, conn: Connection, node: str, frame_id: protocol.FrameId | None) -> None:
        s = self._settings
        server = protocol.ServerInfo(s.server_name, __version__, node)
        creds = conn.credentials
        welcome = protocol.Welcome(
            user=conn.user,
            session=conn.session,
            server=server,
            heartbeat=s.ping_interval,
            expires=expires_field(None if creds is None else creds.expires),
            id=protocol.reply_id(frame_id),
        )
        conn.push(protocol.encode(welcome))

    async def greet(
        self, conn: Connection, node: str, frame_id: protocol.FrameId | None = None
    ) -> None:
        """Queue the ``welcome`` frame (answering the ``auth`` frame ``frame_id``, when the
        identity came that way), then tell the ``on_connect`` hook."""
        self.welcome(conn, node, frame_id)
        on_connect = self._hooks.on_connect
        if on_connect is not None:
            try:
                await on_connect(conn.user, conn.session)
            except Exception:
                log.exception("on_connect hook failed for %s", conn.user)

    async def detach(self, conn: Connection, code: int | None = None) -> None:
        """Forget a connection that is over: its channels, its presence, its queue. Idempotent.

        ``code`` is the close code the client sent, when it closed first.
        """
        if self.attached.pop(conn, 0) == 0:
            return
        self._reads.forget(conn)
        self._metrics.connection_closed()
        self._log_close(conn, code)
        conns = self.users.get(conn.user)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self.users[conn.user]
                with contextlib.suppress(BrokerUnavailable):
                    await self._broker.unwatch(conn.user)
        await self._subscriptions.leave_all(conn)
        await conn.stop()
        on_disconnect = self._hooks.on_disconnect
        if on_disconnect is not None and conn.kind == "ws":
            try:
                await on_disconnect(conn.user, conn.session)
            except Exception:
                log.exception("on_disconnect hook failed for %s", conn.user)

    @staticmethod
    def _log_close(conn: Connection, code: int | None) -> None:
        by_server = conn.close_code is not None
        close = conn.close_code if by_server else code
        conn_log.info(
            "connection closed",
            extra={
                "event": "close",
                "session": conn.session,
                "user": conn.user,
                "kind": conn.kind,
                "code": close if close is not None else 1006,
                "reason": CLOSE_NAMES.get(close or 1006, "application"),
                "by": "server" if by_server else "client",
                "duration": round(time.monotonic() - conn.opened, 3),
            },
        )

    def _overflowed(self, conn: Connection) -> None:
        # Called from inside a fan-out loop: leave the channels on the next tick, not while
        # the loop is iterating over them. The connection ignores pushes from now on.
        self._metrics.slow_consumer()
        self._spawn(self.detach(conn))
