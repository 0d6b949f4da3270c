"""The hub: connections, channel subscriptions, presence, direct delivery and limits.

The hub talks to a :class:`~wshub.brokers.Broker` and to :class:`~wshub.core.connection.Connection`
objects, never to sockets, ASGI or Redis. The server adapts a transport into connections and
feeds the hub the text frames it receives.

Fan-out is local and synchronous: the broker hands a node each publication once, the hub
looks up the channel's subscribers and pushes the one encoded frame onto each queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw

from wshub import __version__, protocol
from wshub.app.metrics import HubMetrics
from wshub.brokers import Broker, BrokerTimeout, BrokerUnavailable, create_broker
from wshub.core import serving
from wshub.core.channel import LocalChannel, PendingJoin
from wshub.core.connection import AsgiConnection, Connection, Link
from wshub.core.gaps import GapFiller
from wshub.core.hooks import Authorize, HookRefusal, OnConnect, OnDisconnect, OnPublish
from wshub.core.permissions import Permissions
from wshub.core.ratelimit import RateLimiter
from wshub.core.read_budget import ReadBudget
from wshub.core.serving import bounded
from wshub.model.config import Settings
from wshub.model.history import history_frame
from wshub.model.publication import Publication
from wshub.protocol import ErrorCode, FrameError
from wshub.protocol.wire import Frame
from wshub.transport.direct import DirectConnection, Flusher

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["CHAT_CHANNEL", "Authorize", "Hub", "Refusal"]

log = logging.getLogger("wshub.core.hub")
conn_log = logging.getLogger("wshub.connections")
"""One line per connection open and close; INFO, so ``--log-level warning`` silences it."""

DRAIN_TICK = 0.1
"""Seconds between two batches of closes while draining."""
DRAIN_MIN_BATCH = 10
"""Connections closed together at least: spreading a few clients' reconnects spares no one,
and a development node with a page or two open stops at once."""

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
    4008: "slow consumer",
}

CHAT_CHANNEL = "$chat"
"""The plain-text chat's broadcast channel; ``$`` keeps it out of reach of protocol clients."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused, as an HTTP status for the denial response."""

    status: int
    reason: str
    retry_after: int | None = None


class Hub:
    """A real-time messaging hub. Mount ``hub.router`` into a FastAPI app.

    >>> hub = Hub("memory://")                         # doctest: +SKIP
    >>> app.include_router(hub.router)                 # doctest: +SKIP
    >>> await hub.publish("orders:42", {"status": "shipped"})  # doctest: +SKIP

    Hooks (see :mod:`wshub.core.hooks`) are plain async callables: ``authorize`` decides joins and
    publications beyond a connection's own permissions, ``on_publish`` validates or transforms
    what clients publish, ``on_connect`` and ``on_disconnect`` observe protocol connections.
    """

    def __init__(
        self,
        broker: str | Broker = "memory://",
        settings: Settings | None = None,
        *,
        authorize: Authorize | None = None,
        on_publish: OnPublish | None = None,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.settings.validate()
        self.broker_url = broker if isinstance(broker, str) else type(broker).__name__
        self.node = secrets.token_hex(4)
        """This node's id: in ``welcome.server.node``, and in the shared broker's presence."""
        self.broker: Broker = (
            create_broker(broker, self.settings, self.node) if isinstance(broker, str) else broker
        )
        self.authorize = authorize
        self.on_publish = on_publish
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._channels: dict[str, LocalChannel] = {}
        self._users: dict[str, dict[Connection, None]] = {}
        self._attached: dict[Connection, None] = {}
        self._admitted = 0
        self._admitted_per_user: dict[str, int] = {}
        self._started = False
        self._draining = False
        self._start_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._gaps = GapFiller(self.broker, self._channels, self._spawn, frozenset([CHAT_CHANNEL]))
        self._router: APIRouter | None = None
        self._flusher = Flusher()
        self.clock: Callable[[], float] = time.monotonic
        """The clock for rate limits; tests replace it."""
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        """How a rate-limited connection's reader is held back; tests replace it too."""
        self.metrics = HubMetrics()
        self._reads = ReadBudget(
            self.settings.unjoined_read_rate, self.settings.max_channels, lambda: self.clock()
        )

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the broker. Idempotent; the router's lifespan calls it."""
        async with self._start_lock:
            if not self._started:
                await self.broker.start(self)
                self._started = True

    async def stop(self) -> None:
        """Close every connection and the broker."""
        if not self._started:
            return
        for conn in list(self._attached):
            conn.close(protocol.CloseCode.GOING_AWAY, "server shutting down")
        for task in list(self._tasks):
            task.cancel()
        await self.broker.close()
        self._started = False

    async def drain(self, seconds: float) -> None:
        """Take this node out of service gracefully, for a shutdown.

        New handshakes are refused with 503 from now on. Every connection is closed with 1001
        after the frames already queued for it, in batches spread over ``seconds`` so that
        the clients do not all reconnect to the other nodes at the same moment. Peers that
        do not complete the close within the close timeout are cut off. Each connection's
        end removes it from presence as usual; :meth:`stop` then leaves the cluster.
        """
        self._draining = True
        loop = asyncio.get_running_loop()
        conns = [c for c in self._attached if not c.closing]
        batches = max(1, min(len(conns) // DRAIN_MIN_BATCH, int(seconds / DRAIN_TICK)))
        spread = seconds * (batches - 1) / batches
        log.info("draining: closing %d connections with 1001 over %.1f s", len(conns), spread)
        started = loop.time()
        for i in range(batches):
            for conn in conns[i * len(conns) // batches : (i + 1) * len(conns) // batches]:
                conn.close(protocol.CloseCode.GOING_AWAY, "server draining: reconnect")
            if i + 1 < batches:
                await asyncio.sleep(max(0.0, started + (i + 1) * seconds / batches - loop.time()))
        # Connections that were mid-handshake when the drain began.
        for conn in list(self._attached):
            conn.close(protocol.CloseCode.GOING_AWAY, "server draining: reconnect")
        if not await self._all_detached(self.settings.close_timeout):
            for conn in list(self._attached):
                conn.drop(protocol.CloseCode.GOING_AWAY, "server draining")
            await self._all_detached(self.settings.close_timeout + 1)
        log.info("drained in %.1f s", loop.time() - started)

    async def _all_detached(self, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self._attached:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun: handshakes are refused, /readyz says 503."""
        return self._draining

    @property
    def accepting(self) -> bool:
        """Ready to accept connections: started, broker connected, not draining."""
        return self._started and not self._draining and self.broker.ready

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @property
    def router(self) -> APIRouter:
        """A FastAPI router with ``/ws`` and ``/ws/{client_id}``, starting the hub with the app."""
        if self._router is None:
            from wshub.app.server import build_router

            self._router = build_router(self)
        return self._router

    # --- admission -------------------------------------------------------------------------

    def admit(self, user: str) -> Refusal | None:
        """Count a connection in, or say why not. Synchronous, so the cap cannot race."""
        refusal = self.admission(user)
        if refusal is not None:
            self.metrics.handshake_refused(refusal.status)
            return refusal
        self._admitted += 1
        self._admitted_per_user[user] = self._admitted_per_user.get(user, 0) + 1
        return None

    def admission(self, user: str) -> Refusal | None:
        """Why a connection of ``user`` would be refused now, or None; counts nothing."""
        s = self.settings
        if self._draining:
            return Refusal(503, "this node is shutting down: connect again", s.retry_after)
        if self._admitted >= s.max_connections:
            return Refusal(503, "connection limit reached on this node", s.retry_after)
        per_user = self._admitted_per_user.get(user, 0)
        if s.max_connections_per_user and per_user >= s.max_connections_per_user:
            return Refusal(503, "connection limit reached for this user", s.retry_after)
        return None

    def release(self, user: str) -> None:
        """Count a connection out; every successful :meth:`admit` is paired with one."""
        self._admitted -= 1
        left = self._admitted_per_user[user] - 1
        if left:
            self._admitted_per_user[user] = left
        else:
            del self._admitted_per_user[user]

    @property
    def serving(self) -> bool:
        """Whether the broker is started and connections can be served."""
        return self._started

    @property
    def connection_count(self) -> int:
        return self._admitted

    @property
    def user_count(self) -> int:
        """Distinct users with at least one connection on this node."""
        return len(self._users)

    def queue_depths(self) -> Iterator[int]:
        """Frames waiting in each connection's queue, for the queue-depth gauges."""
        return (conn.queued for conn in self._attached)

    def channel_counts(self) -> dict[str, int]:
        """Local subscribers per channel on this node."""
        return {
            name: len(ch.live) + len(ch.pending)
            for name, ch in self._channels.items()
            if name != CHAT_CHANNEL
        }

    # --- connections -----------------------------------------------------------------------

    def connect(
        self,
        user: str,
        link: Link,
        kind: str = "ws",
        *,
        permissions: Permissions | None = None,
        expires: float | None = None,
        peer: str = "",
    ) -> Connection:
        """Create and register a connection for an admitted user, with its writer started.

        ``permissions`` limit the channels it may use (None: all); ``expires`` (seconds since
        the Unix epoch) closes it with 4001 at that moment, when its token ends; ``peer`` is
        the client's address, for the log.
        """
        s = self.settings
        rate = RateLimiter(s.rate_limit, self.clock()) if s.rate_limit > 0 else None
        session = secrets.token_hex(8)
        args = (session, user, link, s.queue_size, self._on_overflow, rate, kind, permissions)
        fast = link.fast
        conn_log.info(
            "connection open",
            extra={"event": "open", "session": session, "user": user, "kind": kind, "peer": peer},
        )
        budget = s.queue_bytes
        conn: Connection = (
            AsgiConnection(*args, peer=peer, queue_bytes=budget)
            if fast is None or not s.fast_path
            else DirectConnection(
                *args, fast=fast, flusher=self._flusher, peer=peer, queue_bytes=budget
            )
        )
        self._attached[conn] = None
        if kind == "ws":  # the plain-text chat takes no direct messages
            self._users.setdefault(user, {})[conn] = None
        conn.start()
        self.metrics.connection_opened()
        if expires is not None:
            conn.expire_at(expires)
        return conn

    async def ready(self, conn: Connection) -> None:
        """Make sure direct messages for the connection's user reach this node."""
        conns = self._users.get(conn.user)
        if conns is not None and len(conns) == 1:
            try:
                await self.broker.watch(conn.user)
            except BrokerUnavailable:
                log.warning("broker unavailable: direct messages to %s may not arrive", conn.user)

    def welcome(self, conn: Connection) -> None:
        conn.push(
            protocol.encode(
                protocol.Welcome(
                    user=conn.user,
                    session=conn.session,
                    server=protocol.ServerInfo(self.settings.server_name, __version__, self.node),
                    heartbeat=self.settings.ping_interval,
                )
            )
        )

    async def greet(self, conn: Connection) -> None:
        """Queue the ``welcome`` frame, then tell the ``on_connect`` hook."""
        self.welcome(conn)
        if self.on_connect is not None:
            try:
                await self.on_connect(conn.user, conn.session)
            except Exception:
                log.exception("on_connect hook failed for %s", conn.user)

    async def disconnect(self, conn: Connection, code: int | None = None) -> None:
        """Forget a connection: its channels, its presence, its queue. Idempotent.

        ``code`` is the close code the client sent, when it closed first.
        """
        if self._attached.pop(conn, 0) == 0:
            return
        self._reads.forget(conn)
        self.metrics.connection_closed()
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
        conns = self._users.get(conn.user)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._users[conn.user]
                with contextlib.suppress(BrokerUnavailable):
                    await self.broker.unwatch(conn.user)
        channels = list(conn.channels)
        conn.channels.clear()
        for name in channels:
            await self._unsubscribe(conn, name)
        await conn.stop()
        if self.on_disconnect is not None and conn.kind == "ws":
            try:
                await self.on_disconnect(conn.user, conn.session)
            except Exception:
                log.exception("on_disconnect hook failed for %s", conn.user)

    def _on_overflow(self, conn: Connection) -> None:
        # Called from inside a fan-out loop: leave the channels on the next tick, not while
        # the loop is iterating over them. The connection ignores pushes from now on.
        self.metrics.slow_consumer()
        self._spawn(self.disconnect(conn))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed", exc_info=exc)

    # --- frames from clients ---------------------------------------------------------------

    async def handle_text(self, conn: Connection, text: str, deadline: float | None = None) -> None:
        """Serve one text frame from a protocol client. Never raises for bad input.

        ``deadline`` (event-loop time) bounds the broker calls made for it: see
        :mod:`wshub.core.serving`.
        """
        if conn.closing:  # e.g. its token expired: nothing more is done on its behalf
            return
        if not self._within_rate(conn):
            if conn.rate is not None and not conn.closing:
                await self.sleep(conn.rate.pause)  # hold the flooder back: see RateLimiter
            return
        limit = self.settings.max_frame_bytes
        # A str of n code points is n to 4n bytes of UTF-8: encode only when it matters.
        if len(text) > limit or (
            len(text) * 4 > limit and len(text.encode(errors="surrogatepass")) > limit
        ):
            self._error(conn, ErrorCode.TOO_LARGE, f"frame over {limit} bytes")
            return
        try:
            frame = protocol.decode_client_frame(text)
        except FrameError as exc:
            self._error(conn, exc.code, exc.message, exc.frame_id)
            return
        await serving.within(deadline, self.settings.reply_timeout, self._serve(conn, frame))

    async def _serve(self, conn: Connection, frame: protocol.ClientFrame) -> None:
        try:
            await self._dispatch(conn, frame)
        except FrameError as exc:
            self._error(conn, exc.code, exc.message, exc.frame_id)
        except HookRefusal as exc:
            message = str(exc) or f"refused by the server: {exc.code}"
            self._error(conn, exc.code, message, protocol.frame_id(frame))
        except BrokerTimeout:
            self._error(conn, ErrorCode.TIMEOUT, serving.TIMEOUT, protocol.frame_id(frame))
        except BrokerUnavailable:
            self._error(
                conn,
                ErrorCode.UNAVAILABLE,
                "broker unreachable, retry later",
                protocol.frame_id(frame),
            )
        except Exception:
            log.exception("internal error serving a %s frame", type(frame).__name__)
            self._error(conn, ErrorCode.INTERNAL, "internal error", protocol.frame_id(frame))

    def handle_binary(self, conn: Connection) -> None:
        if self._within_rate(conn):
            self._error(conn, ErrorCode.BAD_FRAME, "binary frames are not accepted")

    def _error(
        self,
        conn: Connection,
        code: ErrorCode,
        message: str,
        frame_id: protocol.FrameId | None = None,
    ) -> None:
        self.metrics.error(code.value)
        conn.push(protocol.error(code, message, frame_id))

    def _within_rate(self, conn: Connection) -> bool:
        rate = conn.rate
        if rate is None:
            return True
        now = self.clock()
        if rate.allow(now):
            return True
        if rate.abusive(now):
            conn.close(protocol.CloseCode.POLICY_VIOLATION, "rate limit exceeded repeatedly")
        elif rate.warn(now):  # then silence until the next interval
            self._error(conn, ErrorCode.RATE_LIMITED, "rate limit exceeded")
        return False

    async def _dispatch(self, conn: Connection, frame: protocol.ClientFrame) -> None:
        fid = protocol.reply_id(protocol.frame_id(frame))
        match frame:
            case protocol.Publish():
                await self._publish(conn, frame)
            case protocol.Join():
                await self._join(conn, frame)
            case protocol.Leave():
                await self._leave(conn, frame)
            case protocol.Send():
                assert frame.data is not UNSET
                await self._send_direct(frame.to, frame.data, conn.user)
                conn.push(protocol.encode(protocol.Ack(id=fid)))
            case protocol.PresenceRequest():
                await self._check(conn, "join", frame.channel, frame)
                self._reads.charge(conn, frame)
                members = await bounded(self.broker.presence(frame.channel), effect=False)
                reply = protocol.Presence(
                    channel=frame.channel,
                    members=[protocol.Member(m.user, Raw(m.meta), m.connections) for m in members],
                    id=fid,
                )
                conn.push(protocol.encode(reply))
            case protocol.HistoryRequest():
                await self._check(conn, "join", frame.channel, frame)
                self._reads.charge(conn, frame)
                since = frame.since
                offset, epoch = (None, None) if since is UNSET else (since.offset, since.epoch)
                current, pubs = await bounded(
                    self.broker.history(frame.channel, offset, epoch, frame.limit), effect=False
                )
                conn.push(history_frame(frame.channel, current, pubs, protocol.frame_id(frame)))
            case protocol.Ping():
                conn.push(protocol.encode(protocol.Pong(id=fid)))

    async def _check(
        self, conn: Connection, action: str, channel: str, frame: protocol.ClientFrame
    ) -> None:
        if not await self.allowed(conn, action, channel):
            raise FrameError(
                ErrorCode.FORBIDDEN,
                f"no permission to {action} {channel!r}",
                protocol.frame_id(frame),
            )

    async def allowed(self, conn: Connection, action: str, channel: str) -> bool:
        """Both the connection's own permissions and the ``authorize`` hook must agree."""
        permissions = conn.permissions
        if permissions is not None and not permissions.allows(action, channel):
            return False
        if self.authorize is None:
            return True
        return await self.authorize(conn.user, action, channel)

    async def _publish(self, conn: Connection, frame: protocol.Publish) -> None:
        await self._check(conn, "publish", frame.channel, frame)
        assert frame.data is not UNSET
        data = bytes(frame.data)
        if self.on_publish is not None:
            # Only here is a publication decoded: without the hook it stays raw JSON.
            try:
                decoded = msgspec.json.decode(data)
            except (msgspec.DecodeError, RecursionError) as exc:  # e.g. 1e400: out of range
                raise FrameError(
                    ErrorCode.BAD_REQUEST,
                    f'"data" cannot be decoded: {exc}',
                    protocol.frame_id(frame),
                ) from None
            value = await self.on_publish(conn.user, frame.channel, decoded)
            data = msgspec.json.encode(value)
        key = None if frame.idempotency_key is UNSET else frame.idempotency_key
        pub = await self.publish_raw(frame.channel, data, conn.user, idempotency_key=key)
        ack = protocol.Ack(
            id=protocol.reply_id(protocol.frame_id(frame)),
            channel=pub.channel,
            offset=pub.offset,
            epoch=pub.epoch,
        )
        conn.push(protocol.encode(ack))

    async def _join(self, conn: Connection, frame: protocol.Join) -> None:
        channel = frame.channel
        fid = protocol.frame_id(frame)
        await self._check(conn, "join", channel, frame)
        meta = b"null" if frame.meta is UNSET else bytes(frame.meta)
        if len(meta) > self.settings.max_meta_bytes:
            raise FrameError(
                ErrorCode.TOO_LARGE, f'"meta" over {self.settings.max_meta_bytes} bytes', fid
            )
        since = frame.since
        offset, epoch = (None, None) if since is UNSET else (since.offset, since.epoch)
        if channel in conn.channels:
            # Already subscribed: nothing to resend; refresh the presence meta.
            rec = await bounded(self.broker.recover(channel, offset, epoch), effect=False)
            conn.push(self._joined(channel, rec.offset, rec.epoch, rec.recovered, fid))
            await bounded(
                self.broker.presence_add(channel, conn.user, conn.session, meta), effect=True
            )
            return
        if len(conn.channels) >= self.settings.max_channels:
            raise FrameError(
                ErrorCode.LIMIT,
                f"at most {self.settings.max_channels} channels per connection",
                fid,
            )
        conn.channels[channel] = None
        ch, fresh = self._local(channel)
        pending = ch.pending[conn] = PendingJoin()
        try:
            if fresh:
                await self._subscribe(ch)
            else:
                await bounded(asyncio.shield(ch.subscribed), effect=False)
            started = time.perf_counter()
            rec = await bounded(self.broker.recover(channel, offset, epoch), effect=False)
            if channel not in conn.channels:
                return  # disconnected meanwhile; disconnect() cleaned up
            # Presence before the reply: once a client holds ``joined``, everyone who joins
            # after it sees it in presence and no stale ``member_joined`` for it.
            first = await bounded(
                self.broker.presence_add(channel, conn.user, conn.session, meta), effect=True
            )
            if channel not in conn.channels:  # disconnected while being registered
                await self._unsubscribe(conn, channel)
                return
            if first:
                event = protocol.MemberJoined(channel=channel, user=conn.user, meta=Raw(meta))
                await bounded(
                    self.broker.emit(channel, protocol.encode(event), exclude_user=conn.user),
                    effect=True,
                )
        except BaseException:
            if conn.channels.pop(channel, 0) is None:
                # Undone after the error reply, so that the undoing cannot delay it.
                await serving.after_reply(lambda: self._unsubscribe(conn, channel))
            raise
        self.metrics.joined()
        self.metrics.recovered(time.perf_counter() - started, len(rec.publications))
        ch.learn_position(rec.offset, rec.epoch)
        conn.push(self._joined(channel, rec.offset, rec.epoch, rec.recovered, fid))
        for pub in rec.publications:
            conn.push(pub.text())  # not pub.frame: a cache would live as long as the history
        start = rec.offset
        for item in pending.buffer:
            if isinstance(item, Publication):
                if item.epoch == rec.epoch and item.offset > start:
                    conn.push_frame(item.frame)
                    start = item.offset
            elif item[1] != conn.user:
                conn.push(item[0])
        pending.buffer.clear()
        if ch.pending.pop(conn, None) is None:
            return  # held back more than its queue holds: dropped as a slow consumer
        if ch.caught_up(start, rec.epoch):
            ch.live[conn] = None
        else:  # deliveries up to ``start`` are still on their way to this node
            ch.pending[conn] = pending
            pending.ready = True
            pending.start = start
            pending.epoch = rec.epoch

    @staticmethod
    def _joined(
        channel: str, offset: int, epoch: str, recovered: bool, fid: protocol.FrameId | None
    ) -> str:
        return protocol.encode(
            protocol.Joined(
                channel=channel,
                offset=offset,
                epoch=epoch,
                recovered=recovered,
                id=protocol.reply_id(fid),
            )
        )

    async def _leave(self, conn: Connection, frame: protocol.Leave) -> None:
        fid = protocol.frame_id(frame)
        if frame.channel not in conn.channels:
            raise FrameError(ErrorCode.NOT_JOINED, f"not joined to {frame.channel!r}", fid)
        del conn.channels[frame.channel]
        await self._unsubscribe(conn, frame.channel)
        conn.push(protocol.encode(protocol.Left(channel=frame.channel, id=protocol.reply_id(fid))))

    def _local(self, channel: str) -> tuple[LocalChannel, bool]:
        ch = self._channels.get(channel)
        if ch is not None:
            return ch, False
        ch = self._channels[channel] = LocalChannel(
            channel, self._fanned_out, self.settings.queue_size
        )
        return ch, True

    async def _subscribe(self, ch: LocalChannel) -> None:
        try:
            await bounded(self.broker.subscribe(ch.name), effect=False)
        except BaseException as exc:
            if not ch.subscribed.done():
                ch.subscribed.set_exception(BrokerUnavailable(str(exc)))
                ch.subscribed.exception()  # retrieved: other joiners re-raise it themselves
            raise
        if not ch.subscribed.done():
            ch.subscribed.set_result(None)

    async def _forget_if_empty(self, ch: LocalChannel) -> None:
        if ch.empty() and self._channels.get(ch.name) is ch:
            del self._channels[ch.name]
            with contextlib.suppress(BrokerUnavailable):
                await bounded(self.broker.unsubscribe(ch.name), effect=False)

    async def _unsubscribe(self, conn: Connection, channel: str) -> None:
        ch = self._channels.get(channel)
        if ch is not None:
            ch.live.pop(conn, None)
            ch.pending.pop(conn, None)
            await self._forget_if_empty(ch)
        if conn.kind != "ws":
            return
        try:
            meta = await bounded(
                self.broker.presence_remove(channel, conn.user, conn.session), effect=True
            )
            if meta is not None:
                event = protocol.MemberLeft(channel=channel, user=conn.user, meta=Raw(meta))
                await bounded(
                    self.broker.emit(channel, protocol.encode(event), exclude_user=conn.user),
                    effect=True,
                )
        except BrokerUnavailable:
            log.debug("broker unavailable: presence of %s in %s not removed", conn.user, channel)

    # --- deliveries from the broker (BrokerSink) -------------------------------------------

    def deliver(self, pub: Publication) -> None:
        self._gaps.deliver(pub)

    def _fanned_out(self, pub: Publication, pushed: int) -> None:
        self.metrics.fanned_out(pushed, time.time() - pub.ts / 1000)

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
            shared = Frame(frame)
            for conn in conns:
                conn.push_frame(shared)
            self.metrics.direct_fanned_out(len(conns))

    def deliver_disconnect(self, user: str) -> None:
        # 1008, not 1000: an operator removed this user, and a client should not come straight
        # back (PROTOCOL.md: 1008 means "do not reconnect at once").
        for conn in list(self._users.get(user, ())):
            conn.close(protocol.CloseCode.POLICY_VIOLATION, "disconnected by the server")

    # --- plain-text chat -------------------------------------------------------------------

    async def chat_join(self, conn: Connection) -> None:
        conn.channels[CHAT_CHANNEL] = None
        ch, fresh = self._local(CHAT_CHANNEL)
        ch.live[conn] = None
        if fresh:
            await self._subscribe(ch)

    async def chat_say(self, conn: Connection, text: str) -> None:
        conn.push(f"You wrote: {text}")
        await self.broker.emit(CHAT_CHANNEL, f"Client #{conn.user} says: {text}")

    async def chat_leave(self, conn: Connection, code: int | None = None) -> None:
        await self.disconnect(conn, code)
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.emit(CHAT_CHANNEL, f"Client #{conn.user} left the chat")

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
        if not protocol.is_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        if idempotency_key is not None and not protocol.is_idempotency_key(idempotency_key):
            raise ValueError("idempotency_key must be 1 to 64 characters")
        await self.start()
        timeout = self.settings.reply_timeout
        publishing = self.publish_raw(channel, msgspec.json.encode(data), None, idempotency_key)
        return (await serving.within(serving.deadline_in(timeout), timeout, publishing)).offset

    async def publish_raw(
        self,
        channel: str,
        data: bytes,
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> Publication:
        """Publish JSON bytes as they are: the one road of every publication (clients, the
        library, the HTTP API), so each is counted and timed once. The caller checks the
        channel name and the key, and starts the hub."""
        started = time.perf_counter()
        pub = await bounded(
            self.broker.publish(channel, data, sender, idempotency_key), effect=True
        )
        self.metrics.message_published(time.perf_counter() - started)
        return pub

    async def send(self, user: str, data: Any, sender: str | None = None) -> None:
        """Send ``data`` to every connection of ``user``, on every node, within
        ``settings.reply_timeout`` (else :class:`~wshub.brokers.BrokerTimeout`: it may have
        been delivered, or :class:`~wshub.brokers.BrokerUnavailable`: it was not)."""
        await self.start()
        timeout = self.settings.reply_timeout
        sending = self._send_direct(user, Raw(msgspec.json.encode(data)), sender)
        await serving.within(serving.deadline_in(timeout), timeout, sending)

    async def _send_direct(self, user: str, data: Raw, sender: str | None) -> None:
        direct = protocol.Direct(from_=sender, data=data, ts=_now_ms())
        started = time.perf_counter()
        await bounded(self.broker.send(user, protocol.encode(direct)), effect=True)
        self.metrics.direct_sent_once(time.perf_counter() - started)


def _now_ms() -> int:
    return int(time.time() * 1000)
