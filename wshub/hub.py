"""The hub: connections, channel subscriptions, presence, direct delivery and limits.

The hub talks to a :class:`~wshub.brokers.Broker` and to :class:`~wshub.connection.Connection`
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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw

from wshub import __version__, protocol
from wshub.brokers import Broker, BrokerUnavailable, create_broker
from wshub.config import Settings
from wshub.connection import Connection, Link
from wshub.hooks import Authorize, HookRefusal, OnConnect, OnDisconnect, OnPublish
from wshub.permissions import Permissions
from wshub.protocol import ErrorCode, FrameError
from wshub.publication import Publication
from wshub.ratelimit import RateLimiter

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["CHAT_CHANNEL", "Authorize", "Hub", "Refusal"]

log = logging.getLogger("wshub.hub")

CHAT_CHANNEL = "$chat"
"""The plain-text chat's broadcast channel; ``$`` keeps it out of reach of protocol clients."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused, as an HTTP status for the denial response."""

    status: int
    reason: str
    retry_after: int | None = None


class _Pending:
    """A join in progress: live deliveries wait here until the ``joined`` reply is queued."""

    __slots__ = ("buffer", "ready", "start")

    def __init__(self) -> None:
        self.buffer: list[Publication | tuple[str, str | None]] = []
        self.ready = False
        self.start = 0


class _Channel:
    """The subscribers of one channel on this node, and the last offset it delivered."""

    __slots__ = ("epoch", "last_offset", "live", "name", "pending", "subscribed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.live: dict[Connection, None] = {}
        self.pending: dict[Connection, _Pending] = {}
        self.epoch = ""
        self.last_offset = -1  # unknown until the first join learns the channel's position
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def empty(self) -> bool:
        return not self.live and not self.pending


class Hub:
    """A real-time messaging hub. Mount ``hub.router`` into a FastAPI app.

    >>> hub = Hub("memory://")                         # doctest: +SKIP
    >>> app.include_router(hub.router)                 # doctest: +SKIP
    >>> await hub.publish("orders:42", {"status": "shipped"})  # doctest: +SKIP

    Hooks (see :mod:`wshub.hooks`) are plain async callables: ``authorize`` decides joins and
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
        self.broker: Broker = (
            create_broker(broker, self.settings) if isinstance(broker, str) else broker
        )
        self.authorize = authorize
        self.on_publish = on_publish
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._channels: dict[str, _Channel] = {}
        self._users: dict[str, dict[Connection, None]] = {}
        self._attached: dict[Connection, None] = {}
        self._admitted = 0
        self._admitted_per_user: dict[str, int] = {}
        self._started = False
        self._start_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._router: APIRouter | None = None
        self.clock: Callable[[], float] = time.monotonic
        """The clock for rate limits; tests replace it."""

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
            from wshub.server import build_router

            self._router = build_router(self)
        return self._router

    # --- admission -------------------------------------------------------------------------

    def admit(self, user: str) -> Refusal | None:
        """Count a connection in, or say why not. Synchronous, so the cap cannot race."""
        s = self.settings
        if self._admitted >= s.max_connections:
            return Refusal(503, "connection limit reached on this node", s.retry_after)
        per_user = self._admitted_per_user.get(user, 0)
        if s.max_connections_per_user and per_user >= s.max_connections_per_user:
            return Refusal(503, "connection limit reached for this user", s.retry_after)
        self._admitted += 1
        self._admitted_per_user[user] = per_user + 1
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
    ) -> Connection:
        """Create and register a connection for an admitted user, with its writer started.

        ``permissions`` limit the channels it may use (None: all); ``expires`` (seconds since
        the Unix epoch) closes it with 4001 at that moment, when its token ends.
        """
        s = self.settings
        rate = RateLimiter(s.rate_limit, self.clock()) if s.rate_limit > 0 else None
        session = secrets.token_hex(8)
        conn = Connection(
            session, user, link, s.queue_size, self._on_overflow, rate, kind, permissions
        )
        self._attached[conn] = None
        self._users.setdefault(user, {})[conn] = None
        conn.start()
        if expires is not None:
            conn.expire_at(expires)
        return conn

    def welcome(self, conn: Connection) -> None:
        conn.push(
            protocol.encode(
                protocol.Welcome(
                    user=conn.user,
                    session=conn.session,
                    server=protocol.ServerInfo(self.settings.server_name, __version__),
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

    async def disconnect(self, conn: Connection) -> None:
        """Forget a connection: its channels, its presence, its queue. Idempotent."""
        if self._attached.pop(conn, 0) == 0:
            return
        conns = self._users.get(conn.user)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._users[conn.user]
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
        self._spawn(self.disconnect(conn))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- frames from clients ---------------------------------------------------------------

    async def handle_text(self, conn: Connection, text: str) -> None:
        """Serve one text frame from a protocol client. Never raises for bad input."""
        if conn.closing:  # e.g. its token expired: nothing more is done on its behalf
            return
        if not self._within_rate(conn):
            return
        limit = self.settings.max_frame_bytes
        # A str of n code points is n to 4n bytes of UTF-8: encode only when it matters.
        if len(text) > limit or (
            len(text) * 4 > limit and len(text.encode(errors="surrogatepass")) > limit
        ):
            conn.push(protocol.error(ErrorCode.TOO_LARGE, f"frame over {limit} bytes"))
            return
        try:
            frame = protocol.decode_client_frame(text)
        except FrameError as exc:
            conn.push(protocol.error_from(exc))
            return
        try:
            await self._dispatch(conn, frame)
        except FrameError as exc:
            conn.push(protocol.error_from(exc))
        except HookRefusal as exc:
            message = str(exc) or f"refused by the server: {exc.code}"
            conn.push(protocol.error(exc.code, message, protocol.frame_id(frame)))
        except BrokerUnavailable:
            conn.push(
                protocol.error(
                    ErrorCode.UNAVAILABLE,
                    "broker unreachable, retry later",
                    protocol.frame_id(frame),
                )
            )
        except Exception:
            log.exception("internal error serving a %s frame", type(frame).__name__)
            conn.push(
                protocol.error(ErrorCode.INTERNAL, "internal error", protocol.frame_id(frame))
            )

    def handle_binary(self, conn: Connection) -> None:
        if self._within_rate(conn):
            conn.push(protocol.error(ErrorCode.BAD_FRAME, "binary frames are not accepted"))

    def _within_rate(self, conn: Connection) -> bool:
        rate = conn.rate
        if rate is None:
            return True
        now = self.clock()
        if rate.allow(now):
            return True
        if rate.abusive(now):
            conn.close(protocol.CloseCode.POLICY_VIOLATION, "rate limit exceeded repeatedly")
        else:
            conn.push(protocol.error(ErrorCode.RATE_LIMITED, "rate limit exceeded"))
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
                direct = protocol.Direct(from_=conn.user, data=frame.data, ts=_now_ms())
                await self.broker.send(frame.to, protocol.encode(direct))
                conn.push(protocol.encode(protocol.Ack(id=fid)))
            case protocol.PresenceRequest():
                await self._check(conn, "join", frame.channel, frame)
                members = await self.broker.presence(frame.channel)
                reply = protocol.Presence(
                    channel=frame.channel,
                    members=[protocol.Member(m.user, Raw(m.meta), m.connections) for m in members],
                    id=fid,
                )
                conn.push(protocol.encode(reply))
            case protocol.HistoryRequest():
                await self._check(conn, "join", frame.channel, frame)
                since = frame.since
                offset, epoch = (None, None) if since is UNSET else (since.offset, since.epoch)
                epoch, pubs = await self.broker.history(frame.channel, offset, epoch, frame.limit)
                history = protocol.History(
                    channel=frame.channel,
                    epoch=epoch,
                    messages=[Raw(p.frame) for p in pubs],
                    id=fid,
                )
                conn.push(protocol.encode(history))
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
        pub = await self.broker.publish(frame.channel, data, conn.user)
        ack = protocol.Ack(
            id=protocol.reply_id(protocol.frame_id(frame)), channel=pub.channel, offset=pub.offset
        )
        conn.push(protocol.encode(ack))

    async def _join(self, conn: Connection, frame: protocol.Join) -> None:
        channel = frame.channel
        fid = protocol.frame_id(frame)
        await self._check(conn, "join", channel, frame)
        meta = b"null" if frame.meta is UNSET else bytes(frame.meta)
        since = frame.since
        offset, epoch = (None, None) if since is UNSET else (since.offset, since.epoch)
        if channel in conn.channels:
            # Already subscribed: nothing to resend; refresh the presence meta.
            rec = await self.broker.recover(channel, offset, epoch)
            conn.push(self._joined(channel, rec.offset, rec.epoch, rec.recovered, fid))
            await self.broker.presence_add(channel, conn.user, conn.session, meta)
            return
        if len(conn.channels) >= self.settings.max_channels:
            raise FrameError(
                ErrorCode.LIMIT,
                f"at most {self.settings.max_channels} channels per connection",
                fid,
            )
        conn.channels[channel] = None
        ch, fresh = self._local(channel)
        pending = ch.pending[conn] = _Pending()
        try:
            if fresh:
                await self._subscribe(ch)
            else:
                await asyncio.shield(ch.subscribed)
            rec = await self.broker.recover(channel, offset, epoch)
        except BaseException:
            conn.channels.pop(channel, None)
            ch.pending.pop(conn, None)
            await self._forget_if_empty(ch)
            raise
        if conn.closed or channel not in conn.channels:
            return
        if ch.last_offset < 0 or ch.epoch != rec.epoch:
            ch.last_offset, ch.epoch = rec.offset, rec.epoch
        conn.push(self._joined(channel, rec.offset, rec.epoch, rec.recovered, fid))
        for pub in rec.publications:
            conn.push(pub.frame)
        start = rec.offset
        for item in pending.buffer:
            if isinstance(item, Publication):
                if item.epoch == rec.epoch and item.offset > start:
                    conn.push(item.frame)
                    start = item.offset
            elif item[1] != conn.user:
                conn.push(item[0])
        pending.buffer.clear()
        if ch.last_offset >= start:
            del ch.pending[conn]
            ch.live[conn] = None
        else:  # deliveries up to ``start`` are still on their way to this node
            pending.ready = True
            pending.start = start
        first = await self.broker.presence_add(channel, conn.user, conn.session, meta)
        if first:
            event = protocol.MemberJoined(channel=channel, user=conn.user, meta=Raw(meta))
            await self.broker.emit(channel, protocol.encode(event), exclude_user=conn.user)

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

    def _local(self, channel: str) -> tuple[_Channel, bool]:
        ch = self._channels.get(channel)
        if ch is not None:
            return ch, False
        ch = self._channels[channel] = _Channel(channel)
        return ch, True

    async def _subscribe(self, ch: _Channel) -> None:
        try:
            await self.broker.subscribe(ch.name)
        except BaseException as exc:
            if not ch.subscribed.done():
                ch.subscribed.set_exception(BrokerUnavailable(str(exc)))
                ch.subscribed.exception()  # retrieved: other joiners re-raise it themselves
            raise
        if not ch.subscribed.done():
            ch.subscribed.set_result(None)

    async def _forget_if_empty(self, ch: _Channel) -> None:
        if ch.empty() and self._channels.get(ch.name) is ch:
            del self._channels[ch.name]
            with contextlib.suppress(BrokerUnavailable):
                await self.broker.unsubscribe(ch.name)

    async def _unsubscribe(self, conn: Connection, channel: str) -> None:
        ch = self._channels.get(channel)
        if ch is not None:
            ch.live.pop(conn, None)
            ch.pending.pop(conn, None)
            await self._forget_if_empty(ch)
        if conn.kind != "ws":
            return
        try:
            meta = await self.broker.presence_remove(channel, conn.user, conn.session)
            if meta is not None:
                event = protocol.MemberLeft(channel=channel, user=conn.user, meta=Raw(meta))
                await self.broker.emit(channel, protocol.encode(event), exclude_user=conn.user)
        except BrokerUnavailable:
            log.warning("broker unavailable: presence of %s in %s not removed", conn.user, channel)

    # --- deliveries from the broker (BrokerSink) -------------------------------------------

    def deliver(self, pub: Publication) -> None:
        ch = self._channels.get(pub.channel)
        if ch is None:
            return
        if pub.epoch == ch.epoch:
            if pub.offset <= ch.last_offset:
                return  # already covered by the history a joiner was given
            ch.last_offset = pub.offset
        elif ch.last_offset >= 0:
            ch.epoch, ch.last_offset = pub.epoch, pub.offset
        frame = pub.frame
        for conn in ch.live:
            conn.push(frame)
        if ch.pending:
            self._deliver_pending(ch, pub)

    def _deliver_pending(self, ch: _Channel, pub: Publication) -> None:
        for conn, pending in list(ch.pending.items()):
            if not pending.ready:
                pending.buffer.append(pub)
                continue
            if pub.offset > pending.start:
                conn.push(pub.frame)
            if pub.offset >= pending.start:
                del ch.pending[conn]
                ch.live[conn] = None

    def deliver_event(self, channel: str, frame: str, exclude_user: str | None) -> None:
        ch = self._channels.get(channel)
        if ch is None:
            return
        for conn in ch.live:
            if conn.user != exclude_user:
                conn.push(frame)
        for conn, pending in ch.pending.items():
            if pending.ready:
                if conn.user != exclude_user:
                    conn.push(frame)
            else:
                pending.buffer.append((frame, exclude_user))

    def deliver_direct(self, user: str, frame: str) -> None:
        conns = self._users.get(user)
        if conns:
            for conn in conns:
                if conn.kind == "ws":
                    conn.push(frame)

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

    async def chat_leave(self, conn: Connection) -> None:
        await self.disconnect(conn)
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.emit(CHAT_CHANNEL, f"Client #{conn.user} left the chat")

    # --- the library API -------------------------------------------------------------------

    async def publish(self, channel: str, data: Any) -> int:
        """Publish ``data`` (any JSON-serialisable value) to a channel; returns its offset.

        Delivered with ``from: null``, as publications from a backend are.
        """
        if not protocol.is_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        await self.start()
        pub = await self.broker.publish(channel, msgspec.json.encode(data), None)
        return pub.offset

    async def send(self, user: str, data: Any, sender: str | None = None) -> None:
        """Send ``data`` to every connection of ``user``, on every node."""
        await self.start()
        direct = protocol.Direct(from_=sender, data=Raw(msgspec.json.encode(data)), ts=_now_ms())
        await self.broker.send(user, protocol.encode(direct))


def _now_ms() -> int:
    return int(time.time() * 1000)
