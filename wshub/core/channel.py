"""One channel's subscribers on this node, and the order in which they get its messages. Pure.

A node receives each publication of a channel once from its broker and hands it to every local
subscriber. This class keeps that stream in offset order with no gaps and no repeats:

- a publication at or below the last offset delivered is dropped (a joiner already got it
  from history, or the broker repeated it);
- a publication beyond the next offset reveals a gap (a shared broker's pub/sub is at most
  once). It is held, with everything after it, until the hub has fetched the missing ones from
  history (:meth:`repaired`) or given up on them (:meth:`skip`; see ``wshub.core.gaps``);
- joins in progress get their live messages held aside until their ``joined`` reply is queued
  (see ``Subscriptions.join``).

Both holds are bounded. A channel holds at most half a subscriber's queue while a gap is
filled, so that releasing it cannot overflow a queue that was keeping up; beyond that it keeps
only the newest publication, whose offset says what to fetch from history next. A join holds
at most a queue's worth; beyond that the joiner is a slow consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from wshub.core.connection import Connection
from wshub.model.publication import Publication
from wshub.protocol import CloseCode
from wshub.protocol.wire import SharedFrame

__all__ = ["LocalChannel", "MissingRange", "PendingJoin"]


class PendingJoin:
    """A join in progress: live deliveries wait here until the ``joined`` reply is queued."""

    __slots__ = ("buffer", "epoch", "ready", "start")

    def __init__(self) -> None:
        self.buffer: list[Publication | tuple[str, str | None]] = []
        self.ready = False
        self.start = 0
        self.epoch = ""


@dataclass(frozen=True, slots=True)
class MissingRange:
    """A gap in this node's stream of a channel, filled from history: the publications
    ``(after, upto]`` in ``epoch`` that it has not received. (A client's ``Gap`` is another
    thing: a loss the server told it about.)"""

    epoch: str
    after: int
    upto: int


class LocalChannel:
    __slots__ = (
        "behind",
        "epoch",
        "held",
        "held_back",
        "last_offset",
        "live",
        "name",
        "on_fan_out",
        "pending",
        "stale",
        "subscribed",
        "syncing",
    )

    def __init__(
        self,
        name: str,
        on_fan_out: Callable[[Publication, int], None],
        held_back: int = 1024,
    ) -> None:
        self.name = name
        self.held_back = held_back
        """The most a join in progress may have held aside: its queue's size, since the
        joiner would overflow that anyway once they are pushed."""
        self.on_fan_out = on_fan_out
        """Told each publication and how many subscribers it was pushed to (for metrics)."""
        self.live: dict[Connection, None] = {}
        self.pending: dict[Connection, PendingJoin] = {}
        self.epoch = ""
        self.last_offset = -1  # unknown until the first join learns the channel's position
        self.held: list[Publication] | None = None  # not None while a gap is being repaired
        self.behind: Publication | None = None
        """The newest publication that arrived while ``held`` was full."""
        self.stale = False  # its position must be read again (the broker reconnected)
        self.syncing = False  # ... and a task is doing it
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def empty(self) -> bool:
        return not self.live and not self.pending

    def subscribers(self) -> list[Connection]:
        return [*self.live, *self.pending]

    def learn_position(self, offset: int, epoch: str) -> None:
        """The channel's position as a join read it, if this node did not know it yet.

        A known position is never moved here: the stream itself moves it, in order.
        """
        if self.last_offset < 0:
            self.last_offset, self.epoch = offset, epoch

    def caught_up(self, offset: int, epoch: str) -> bool:
        """Whether this node's stream has reached a position a joiner read."""
        return self.epoch == epoch and self.last_offset >= offset

    # --- the ordered stream ---------------------------------------------------------------

    def deliver(self, pub: Publication) -> MissingRange | None:
        """Fan a publication out in order, or hold it and return the gap it revealed."""
        held = self.held
        if held is not None:
            if len(held) < max(1, self.held_back // 2):
                held.append(pub)
            else:
                self.behind = pub
            return None
        if self.last_offset >= 0:
            if pub.epoch == self.epoch:
                if pub.offset <= self.last_offset:
                    return None
                if pub.offset > self.last_offset + 1:
                    self.held = [pub]
                    return MissingRange(pub.epoch, self.last_offset, pub.offset - 1)
            elif pub.offset > 1:  # a new epoch whose first publications never arrived
                self.held = [pub]
                return MissingRange(pub.epoch, 0, pub.offset - 1)
        # Also before the first join learned a position: the stream has then moved past
        # what that join read, and taking the join's older position would show a false gap.
        self.epoch, self.last_offset = pub.epoch, pub.offset
        self._fan_out(pub)
        return None

    def hold(self, gap: MissingRange) -> bool:
        """Start holding live publications while ``gap`` is filled; False if already holding."""
        if self.held is not None:
            return False
        self.held = []
        return True

    def repaired(self, missing: list[Publication]) -> MissingRange | None:
        """The gap's publications, in order: deliver them, then what was held behind them."""
        held, self.held = self.held or [], None
        for pub in missing:
            self.epoch, self.last_offset = pub.epoch, pub.offset
            self._fan_out(pub)
        return self._release(held)

    def skip(self, gap: MissingRange) -> MissingRange | None:
        """Give up on a gap: move past it, then deliver what was held behind it."""
        held, self.held = self.held or [], None
        self.epoch, self.last_offset = gap.epoch, gap.upto
        return self._release(held)

    def abandon(self) -> bool:
        """Stop holding, after a repair failed: what was held is dropped (the caller closes
        the subscribers, who rejoin with ``since``). False if it was not holding."""
        if self.held is None:
            return False
        newest = self.behind or (self.held[-1] if self.held else None)
        self.held = self.behind = None
        if newest is not None:
            self.epoch, self.last_offset = newest.epoch, newest.offset
        return True

    def _release(self, held: list[Publication]) -> MissingRange | None:
        for i, pub in enumerate(held):
            gap = self.deliver(pub)
            if gap is not None:
                assert self.held is not None
                self.held.extend(held[i + 1 :])
                return gap
        behind, self.behind = self.behind, None
        if behind is not None:  # what overflowed the hold: a gap up to it, or nothing
            return self.deliver(behind)
        return None

    def _fan_out(self, pub: Publication) -> None:
        frame = pub.frame
        live = self.live
        for conn in live:
            conn.push_frame(frame)
        pushed = len(live)
        if self.pending:
            pushed += self._deliver_pending(pub)
        self.on_fan_out(pub, pushed)

    def _deliver_pending(self, pub: Publication) -> int:
        pushed = 0
        for conn, pending in list(self.pending.items()):
            if not pending.ready:
                self._hold_aside(conn, pending, pub)
                continue
            if pub.epoch != pending.epoch:
                continue
            if pub.offset > pending.start:
                conn.push_frame(pub.frame)
                pushed += 1
            if pub.offset >= pending.start:
                del self.pending[conn]
                self.live[conn] = None
        return pushed

    def deliver_event(self, text: str, exclude_user: str | None) -> None:
        frame = SharedFrame(text)
        for conn in self.live:
            if conn.user != exclude_user:
                conn.push_frame(frame)
        for conn, pending in list(self.pending.items()):
            if pending.ready:
                if conn.user != exclude_user:
                    conn.push_frame(frame)
            else:
                self._hold_aside(conn, pending, (text, exclude_user))

    def _hold_aside(
        self, conn: Connection, pending: PendingJoin, item: Publication | tuple[str, str | None]
    ) -> None:
        if len(pending.buffer) < self.held_back:
            pending.buffer.append(item)
            return
        # A joiner whose join takes longer than its queue can hold: a slow consumer.
        del self.pending[conn]
        pending.buffer.clear()
        conn.drop(CloseCode.SLOW_CONSUMER, "slow consumer")
