"""Serving a protocol client's text frames: limits, decoding, permissions, then the work.

:meth:`FrameHandler.handle_text` never raises for bad input: every refusal is an ``error``
frame with the code docs/protocol.md names, and the connection goes on (a flood past its rate
is the one exception: 1008). Each frame's broker calls are bounded by its deadline (see
:mod:`wshub.core.serving`).
"""

from __future__ import annotations

import logging

import msgspec
from msgspec import UNSET, Raw

from wshub import protocol
from wshub.brokers.base import Broker, BrokerTimeout, BrokerUnavailable
from wshub.core import serving
from wshub.core.channel_rules import ChannelRule, InvalidData
from wshub.core.clock import Clock
from wshub.core.connection import Connection
from wshub.core.credentials import subscription_grant
from wshub.core.hooks import Authorize, HookRefusal, Hooks
from wshub.core.metrics import Metrics
from wshub.core.publishing import Publisher
from wshub.core.read_budget import ReadBudget
from wshub.core.refresh import refresh
from wshub.core.server_subscriptions import ServerSubscriptions
from wshub.core.serving import bounded
from wshub.core.subscriptions import Subscriptions
from wshub.model.config import Settings
from wshub.model.history import history_frame
from wshub.protocol import ErrorCode, FrameError

__all__ = ["FrameHandler"]

log = logging.getLogger("wshub.core.hub")


class FrameHandler:
    __slots__ = (
        "_broker",
        "_clock",
        "_hooks",
        "_metrics",
        "_publisher",
        "_reads",
        "_server_subscriptions",
        "_settings",
        "_subscriptions",
    )

    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        metrics: Metrics,
        hooks: Hooks,
        clock: Clock,
        reads: ReadBudget,
        subscriptions: Subscriptions,
        publisher: Publisher,
        server_subscriptions: ServerSubscriptions,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._metrics = metrics
        self._hooks = hooks
        self._clock = clock
        self._reads = reads
        self._subscriptions = subscriptions
        self._publisher = publisher
        self._server_subscriptions = server_subscriptions

    async def handle_text(self, conn: Connection, text: str, deadline: float | None) -> None:
        if conn.closing:  # e.g. its token expired: nothing more is done on its behalf
            return
        if not self._within_rate(conn):
            if conn.rate is not None and not conn.closing:
                await self._clock.sleep(conn.rate.pause)  # hold the flooder back: RateLimiter
            return
        limit = self._settings.max_frame_bytes
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
        await serving.within(deadline, self._settings.reply_timeout, self._serve(conn, frame))

    def handle_binary(self, conn: Connection) -> None:
        if self._within_rate(conn):
            self._error(conn, ErrorCode.BAD_FRAME, "binary frames are not accepted")

    async def allowed(self, conn: Connection, action: str, channel: str) -> bool:
        """Both the connection's own permissions and the ``authorize`` hook must agree.

        To join (and so read) a channel, a subscription token, the token's ``channels`` or the
        server's own placement count as permission too (:mod:`wshub.core.credentials`).
        """
        decided = await self._by_route(conn, action, channel)
        if decided is not None:  # the route decides alone, as a FastAPI route's dependencies
            return decided
        permissions = conn.permissions
        if permissions is not None and not permissions.allows(action, channel):
            creds = conn.credentials
            if action != "join" or creds is None or not creds.allows(channel):
                return False
        authorize = self._hooks.authorize
        if authorize is None:
            return True
        return await authorize(conn.user, action, channel)

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

    def _error(
        self,
        conn: Connection,
        code: ErrorCode,
        message: str,
        frame_id: protocol.FrameId | None = None,
    ) -> None:
        self._metrics.error(code.value)
        conn.push(protocol.error(code, message, frame_id))

    def _within_rate(self, conn: Connection) -> bool:
        rate = conn.rate
        if rate is None:
            return True
        now = self._clock.now()
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
                await self._subscriptions.leave(conn, frame)
            case protocol.Send():
                assert frame.data is not UNSET
                await self._publisher.send_direct(frame.to, frame.data, conn.user)
                conn.push(protocol.encode(protocol.Ack(id=fid)))
            case protocol.PresenceRequest():
                await self._check(conn, "join", frame.channel, frame)
                self._reads.charge(conn, frame)
                members = await bounded(self._broker.presence(frame.channel), effect=False)
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
                    self._broker.history(frame.channel, offset, epoch, frame.limit), effect=False
                )
                conn.push(history_frame(frame.channel, current, pubs, protocol.frame_id(frame)))
            case protocol.Ping():
                conn.push(protocol.encode(protocol.Pong(id=fid)))
            case protocol.Refresh():
                await refresh(conn, frame, self._server_subscriptions)
            case protocol.Auth():
                raise FrameError(
                    ErrorCode.BAD_REQUEST,
                    "already identified: auth is only the first frame of a connection "
                    "opened without a token (to replace the token, send refresh)",
                    protocol.frame_id(frame),
                )

    async def _join(self, conn: Connection, frame: protocol.Join) -> None:
        creds = conn.credentials
        if frame.token is UNSET or creds is None:  # in open mode a token is not even read
            await self._check(conn, "join", frame.channel, frame)
            await self._subscriptions.join(conn, frame)
            return
        authorize = self._hooks.authorize
        if self._hooks.routes is not None:  # a route's can_join stands in for authorize
            authorize = self._authorizer(conn)
        expires = await subscription_grant(conn, frame, authorize)
        await self._subscriptions.join(conn, frame)
        if frame.channel in conn.channels:
            creds.grant(frame.channel, expires)  # a fresh token for a joined channel: a new end

    def _rule(self, channel: str) -> ChannelRule | None:
        routes = self._hooks.routes
        return None if routes is None else routes.find(channel)

    async def _by_route(self, conn: Connection, action: str, channel: str) -> bool | None:
        """The decision of the channel's route, or None where no route decides ``action``."""
        rule = self._rule(channel)
        if rule is None or not rule.checks(action):
            return None
        return await rule.allows(conn, action)

    def _authorizer(self, conn: Connection) -> Authorize:
        async def authorize(user: str, action: str, channel: str) -> bool:
            decided = await self._by_route(conn, action, channel)
            if decided is not None:
                return decided
            hook = self._hooks.authorize
            return hook is None or await hook(user, action, channel)

        return authorize

    async def _check(
        self, conn: Connection, action: str, channel: str, frame: protocol.ClientFrame
    ) -> None:
        if not await self.allowed(conn, action, channel):
            raise FrameError(
                ErrorCode.FORBIDDEN,
                f"no permission to {action} {channel!r}",
                protocol.frame_id(frame),
            )

    async def _publish(self, conn: Connection, frame: protocol.Publish) -> None:
        await self._check(conn, "publish", frame.channel, frame)
        assert frame.data is not UNSET
        data = bytes(frame.data)
        on_publish = self._hooks.on_publish
        if on_publish is not None:
            # Only here is a publication decoded: without the hook it stays raw JSON.
            try:
                decoded = msgspec.json.decode(data)
            except (msgspec.DecodeError, RecursionError) as exc:  # e.g. 1e400: out of range
                raise FrameError(
                    ErrorCode.BAD_REQUEST,
                    f'"data" cannot be decoded: {exc}',
                    protocol.frame_id(frame),
                ) from None
            value = await on_publish(conn.user, frame.channel, decoded)
            data = msgspec.json.encode(value)
        rule = self._rule(frame.channel)
        if rule is not None:  # last, so that nothing invalid is delivered, whatever the hook
            try:
                data = rule.validate_json(data)
            except InvalidData as exc:
                fid = protocol.frame_id(frame)
                raise FrameError(ErrorCode.BAD_REQUEST, str(exc), fid) from None
        key = None if frame.idempotency_key is UNSET else frame.idempotency_key
        pub = await self._publisher.publish_raw(frame.channel, data, conn.user, key)
        ack = protocol.Ack(
            id=protocol.reply_id(protocol.frame_id(frame)),
            channel=pub.channel,
            offset=pub.offset,
            epoch=pub.epoch,
        )
        conn.push(protocol.encode(ack))
