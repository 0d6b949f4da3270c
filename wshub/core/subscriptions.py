"""Subscriptions and presence: which local connections hear which channel, and who is there.

A channel is subscribed at the broker once per node, by its first local subscriber, and left
by its last. A join reads the channel's position (and what the client missed) from the broker,
registers the client's presence, and only then replies ``joined`` and replays, while live
publications that arrive meanwhile wait aside (:class:`~wshub.core.channel.PendingJoin`), so
that the client gets each publication once, in order.

Channels whose names begin with ``$`` are the server's own (protocol clients cannot name them):
a connection :meth:`listen` s to their events only; they have no offsets and are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from msgspec import UNSET, Raw

from wshub import protocol
from wshub.brokers.base import Broker, BrokerUnavailable
from wshub.core import serving
from wshub.core.channel import LocalChannel, PendingJoin
from wshub.core.connection import Connection
from wshub.core.metrics import Metrics
from wshub.core.serving import bounded
from wshub.model.config import Settings
from wshub.model.publication import Publication
from wshub.protocol import ErrorCode, FrameError

__all__ = ["INTERNAL", "Subscriptions"]

log = logging.getLogger("wshub.core.hub")

INTERNAL = "$"
"""The first character of the server's own channels, which no protocol client can name."""


class Subscriptions:
    """This node's channels and their local subscribers."""

    __slots__ = ("_broker", "_metrics", "_settings", "channels")

    def __init__(self, broker: Broker, settings: Settings, metrics: Metrics) -> None:
        self._broker = broker
        self._settings = settings
        self._metrics = metrics
        self.channels: dict[str, LocalChannel] = {}

    def counts(self) -> dict[str, int]:
        """Local subscribers per channel on this node (the server's own channels left out)."""
        return {
            name: len(ch.live) + len(ch.pending)
            for name, ch in self.channels.items()
            if not name.startswith(INTERNAL)
        }

    async def join(self, conn: Connection, frame: protocol.Join, by_server: bool = False) -> None:
        """Serve a ``join`` whose permission was checked: reply, replay, then live messages.

        ``by_server``: a join the server makes (:mod:`wshub.core.server_subscriptions`),
        answered ``subscribed``; for a channel already joined it does nothing.
        """
        channel = frame.channel
        fid = protocol.frame_id(frame)
        broker = self._broker
        meta = b"null" if frame.meta is UNSET else bytes(frame.meta)
        if len(meta) > self._settings.max_meta_bytes:
            raise FrameError(
                ErrorCode.TOO_LARGE, f'"meta" over {self._settings.max_meta_bytes} bytes', fid
            )
        since = frame.since
        offset, epoch = (None, None) if since is UNSET else (since.offset, since.epoch)
        if channel in conn.channels:
            if by_server:
                return
            # Already subscribed: nothing to resend; refresh the presence meta.
            rec = await bounded(broker.recover(channel, offset, epoch), effect=False)
            _still_in(conn, channel, fid)
            await bounded(broker.presence_add(channel, conn.user, conn.session, meta), effect=True)
            if channel not in conn.channels:  # its leave may have run before this add
                await serving.after_reply(lambda: self.unsubscribe(conn, channel))
                _still_in(conn, channel, fid)
            conn.push(_joined(channel, rec.offset, rec.epoch, rec.recovered, fid))
            return
        if len(conn.channels) >= self._settings.max_channels:
            raise FrameError(
                ErrorCode.LIMIT,
                f"at most {self._settings.max_channels} channels per connection",
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
            rec = await bounded(broker.recover(channel, offset, epoch), effect=False)
            if channel not in conn.channels:  # detached or taken out: that cleaned up
                if by_server or conn.closing:
                    return
                _still_in(conn, channel, fid)
            # Presence before the reply: once a client holds ``joined``, everyone who joins
            # after it sees it in presence and no stale ``member_joined`` for it.
            first = await bounded(
                broker.presence_add(channel, conn.user, conn.session, meta), effect=True
            )
            if channel not in conn.channels:  # detached or taken out while being registered
                if by_server or conn.closing:
                    await self.unsubscribe(conn, channel)
                    return
                await serving.after_reply(lambda: self.unsubscribe(conn, channel))
                _still_in(conn, channel, fid)
            if first:
                event = protocol.MemberJoined(channel=channel, user=conn.user, meta=Raw(meta))
                await bounded(
                    broker.emit(channel, protocol.encode(event), exclude_user=conn.user),
                    effect=True,
                )
        except BaseException:
            if conn.channels.pop(channel, 0) is None:
                # Undone after the error reply, so that the undoing cannot delay it.
                await serving.after_reply(lambda: self.unsubscribe(conn, channel))
            raise
        self._metrics.joined()
        self._metrics.recovered(time.perf_counter() - started, len(rec.publications))
        ch.learn_position(rec.offset, rec.epoch)
        if by_server:
            conn.push(protocol.encode(protocol.Subscribed(channel, rec.offset, rec.epoch)))
        else:
            conn.push(_joined(channel, rec.offset, rec.epoch, rec.recovered, fid))
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

    async def leave(self, conn: Connection, frame: protocol.Leave) -> None:
        fid = protocol.frame_id(frame)
        if frame.channel not in conn.channels:
            raise FrameError(ErrorCode.NOT_JOINED, f"not joined to {frame.channel!r}", fid)
        del conn.channels[frame.channel]
        if conn.credentials is not None:
            conn.credentials.left(frame.channel)
        await self.unsubscribe(conn, frame.channel)
        conn.push(protocol.encode(protocol.Left(channel=frame.channel, id=protocol.reply_id(fid))))

    async def listen(self, conn: Connection, channel: str) -> None:
        """Give a connection a server channel's events (``$...``): no offsets, no presence."""
        conn.channels[channel] = None
        ch, fresh = self._local(channel)
        ch.live[conn] = None
        if fresh:
            await self._subscribe(ch)

    async def leave_all(self, conn: Connection) -> None:
        """Take a connection that is gone out of every channel it was in."""
        channels = list(conn.channels)
        conn.channels.clear()
        for name in channels:
            await self.unsubscribe(conn, name)

    async def unsubscribe(self, conn: Connection, channel: str) -> None:
        """Remove a connection from a channel's subscribers and from its presence."""
        ch = self.channels.get(channel)
        if ch is not None:
            ch.live.pop(conn, None)
            ch.pending.pop(conn, None)
            await self._forget_if_empty(ch)
        if conn.kind != "ws":
            return
        try:
            meta = await bounded(
                self._broker.presence_remove(channel, conn.user, conn.session), effect=True
            )
            if meta is not None:
                event = protocol.MemberLeft(channel=channel, user=conn.user, meta=Raw(meta))
                await bounded(
                    self._broker.emit(channel, protocol.encode(event), exclude_user=conn.user),
                    effect=True,
                )
        except BrokerUnavailable:
            log.debug("broker unavailable: presence of %s in %s not removed", conn.user, channel)

    def _local(self, channel: str) -> tuple[LocalChannel, bool]:
        ch = self.channels.get(channel)
        if ch is not None:
            return ch, False
        ch = self.channels[channel] = LocalChannel(
            channel, self._fanned_out, self._settings.queue_size
        )
        return ch, True

    def _fanned_out(self, pub: Publication, pushed: int) -> None:
        self._metrics.fanned_out(pushed, time.time() - pub.ts / 1000)

    async def _subscribe(self, ch: LocalChannel) -> None:
        try:
            await bounded(self._broker.subscribe(ch.name), effect=False)
        except BaseException as exc:
            if not ch.subscribed.done():
                ch.subscribed.set_exception(BrokerUnavailable(str(exc)))
                ch.subscribed.exception()  # retrieved: other joiners re-raise it themselves
            raise
        if not ch.subscribed.done():
            ch.subscribed.set_result(None)

    async def _forget_if_empty(self, ch: LocalChannel) -> None:
        if ch.empty() and self.channels.get(ch.name) is ch:
            del self.channels[ch.name]
            with contextlib.suppress(BrokerUnavailable):
                await bounded(self._broker.unsubscribe(ch.name), effect=False)


def _still_in(conn: Connection, channel: str, fid: protocol.FrameId | None) -> None:
    """A ``join`` whose channel the server took the connection out of while it was being
    served (``/api/unsubscribe``, a subscription token's end) is answered, after that
    ``unsubscribed``, with ``not_joined``: the client's last word on the channel is true."""
    if channel not in conn.channels:
        raise FrameError(
            ErrorCode.NOT_JOINED,
            f"not joined to {channel!r}: the server took this connection out of it meanwhile",
            fid,
        )


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
