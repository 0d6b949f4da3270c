"""Gaps are filled or told: what a node does when its broker's pub/sub lost publications.

A shared broker's pub/sub is at most once; offsets show what it lost. A :class:`GapFiller`
takes the publications a node's broker hands it, keeps each local channel's stream whole
(:class:`~wshub.core.channel.LocalChannel` holds what comes after a gap), and fetches what is
missing from the channel's history. When history no longer has it, or the broker cannot be
asked, the channel's subscribers are closed with 1011: they rejoin with ``since`` and learn
from ``recovered`` what they lost. Nothing is ever skipped without telling.

After the broker's pub/sub link was down (``resync``), a channel whose last publications were
lost shows no gap until its next publication, so every channel's position is read again,
retried until the broker answers or the channel has no subscribers left.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from wshub import protocol
from wshub.brokers.base import Broker, BrokerUnavailable
from wshub.core.channel import LocalChannel, MissingRange
from wshub.model.history import Recovery
from wshub.model.publication import Publication

__all__ = ["GapFiller"]

log = logging.getLogger("wshub.core.hub")

RETRY_FIRST = 0.1
RETRY_MOST = 2.0


class GapFiller:
    def __init__(
        self,
        broker: Broker,
        channels: dict[str, LocalChannel],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.broker = broker
        self.channels = channels
        self.spawn = spawn

    def deliver(self, pub: Publication) -> None:
        ch = self.channels.get(pub.channel)
        if ch is not None:
            gap = ch.deliver(pub)
            if gap is not None:
                self.spawn(self.repair(ch, gap))

    def resync(self) -> None:
        """Deliveries may have been lost (the broker reconnected): check every channel."""
        for ch in list(self.channels.values()):
            # The server's own channels (the plain-text chat's) have no offsets to check.
            if ch.last_offset >= 0 and not ch.name.startswith("$"):
                ch.stale = True
                if not ch.syncing:
                    ch.syncing = True
                    self.spawn(self._catch_up(ch))

    def _current(self, ch: LocalChannel) -> bool:
        return self.channels.get(ch.name) is ch

    async def _catch_up(self, ch: LocalChannel) -> None:
        try:
            while ch.stale and self._current(ch):
                ch.stale = False
                rec = await self._position(ch)
                if rec is None:
                    return
                if rec.epoch == ch.epoch and rec.offset <= ch.last_offset:
                    continue
                gap = MissingRange(
                    rec.epoch, ch.last_offset if rec.epoch == ch.epoch else 0, rec.offset
                )
                if gap.upto == 0:  # a new, empty epoch: nothing was missed, offsets restart
                    ch.epoch, ch.last_offset = rec.epoch, 0
                elif ch.hold(gap):
                    await self.repair(ch, gap)
                else:  # a repair is running: look again once it is done
                    ch.stale = True
                    await asyncio.sleep(RETRY_FIRST)
        finally:
            ch.syncing = False

    async def _position(self, ch: LocalChannel) -> Recovery | None:
        """The channel's position, asked until the broker answers; None once nobody listens."""
        delay = RETRY_FIRST
        while self._current(ch):
            try:
                return await self.broker.recover(ch.name, None, None)
            except BrokerUnavailable:
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, RETRY_MOST)
        return None

    async def repair(self, ch: LocalChannel, gap: MissingRange) -> None:
        """Fetch a gap's publications from history, or cut off the subscribers that missed them.

        Whatever fails here, the channel stops holding: a channel left holding would deliver
        nothing, to anyone, for good.
        """
        next_gap: MissingRange | None = gap
        try:
            while next_gap is not None:
                gap = next_gap
                missing = await self._missing(ch, gap)
                if missing is not None:
                    log.info("%s: recovered %d missed messages", ch.name, len(missing))
                    next_gap = ch.repaired(missing)
                else:
                    log.warning(
                        "%s: messages %d..%d missed and not in history; closing subscribers",
                        ch.name,
                        gap.after + 1,
                        gap.upto,
                    )
                    self._tell(ch)
                    next_gap = ch.skip(gap)
        except BaseException:
            if ch.abandon():
                self._tell(ch)
            raise

    async def _missing(self, ch: LocalChannel, gap: MissingRange) -> list[Publication] | None:
        try:
            epoch, pubs = await self.broker.history(
                ch.name, gap.after, gap.epoch, gap.upto - gap.after
            )
        except BrokerUnavailable:
            return None
        except Exception:
            log.exception("%s: reading history to fill a gap failed", ch.name)
            return None
        if epoch == gap.epoch and [p.offset for p in pubs] == list(
            range(gap.after + 1, gap.upto + 1)
        ):
            return pubs
        return None

    @staticmethod
    def _tell(ch: LocalChannel) -> None:
        for conn in ch.subscribers():
            conn.close(protocol.CloseCode.INTERNAL_ERROR, "missed messages: rejoin")
