"""A channel's history: its offsets, its epoch and its last N publications. Pure.

Used by the in-memory broker, and the reference for what any broker's history must answer.
Time is passed in, never read, so tests can move it.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from wshub.publication import Publication

__all__ = ["ChannelLog", "Recovery", "new_epoch", "page", "recover"]


def new_epoch() -> str:
    """A fresh name for one life of a channel's history."""
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to a join: where the channel is, and what the joiner missed, if knowable."""

    offset: int
    epoch: str
    recovered: bool
    publications: tuple[Publication, ...] = ()


def recover(
    top: int, epoch: str, kept: Sequence[Publication], offset: int | None, since_epoch: str | None
) -> Recovery:
    """What a ``join`` with ``since`` gets, given what a channel still keeps.

    ``kept`` is the retained history, oldest first, already cut to its size and TTL. The rules
    are PROTOCOL.md's: recovered only when nothing after ``offset`` has been evicted.
    """
    if offset is None or since_epoch != epoch or offset > top:
        return Recovery(top, epoch, False)
    if offset == top:
        return Recovery(top, epoch, True)
    if not kept or kept[0].offset > offset + 1:
        return Recovery(top, epoch, False)
    return Recovery(top, epoch, True, tuple(pub for pub in kept if pub.offset > offset))


def page(
    epoch: str, kept: Sequence[Publication], offset: int | None, since_epoch: str | None, limit: int
) -> list[Publication]:
    """What a ``history`` request gets.

    With a position in the current epoch: the first ``limit`` publications after it, so a
    client can page forward. Otherwise the last ``limit`` ones.
    """
    if limit <= 0:
        return []
    if offset is not None and since_epoch == epoch:
        return [pub for pub in kept if pub.offset > offset][:limit]
    return list(kept[-limit:])


class ChannelLog:
    """Offsets and retained publications of one channel.

    ``top`` survives the eviction of every entry: a client that saw the last message can
    still be told ``recovered: true`` after the history has expired.
    """

    __slots__ = ("entries", "epoch", "last_active", "size", "top", "ttl")

    def __init__(self, size: int, ttl: float, epoch: str | None = None) -> None:
        self.size = size
        self.ttl = ttl
        self.epoch = epoch or new_epoch()
        self.top = 0
        self.entries: deque[tuple[float, Publication]] = deque(maxlen=size)
        self.last_active = 0.0

    def append(
        self, channel: str, data: bytes, sender: str | None, ts: int, now: float
    ) -> Publication:
        self.top += 1
        pub = Publication(channel, self.top, self.epoch, sender, data, ts)
        self.entries.append((now, pub))
        self.last_active = now
        return pub

    def evict(self, now: float) -> None:
        entries = self.entries
        deadline = now - self.ttl
        while entries and entries[0][0] <= deadline:
            entries.popleft()

    def recover(self, offset: int | None, epoch: str | None, now: float) -> Recovery:
        """What a ``join`` with ``since`` gets: the missed publications, or ``recovered: false``."""
        if offset is None:
            return Recovery(self.top, self.epoch, False)
        if epoch != self.epoch or offset > self.top:
            return Recovery(self.top, self.epoch, False)
        if offset == self.top:
            return Recovery(self.top, self.epoch, True)
        self.evict(now)
        entries = self.entries
        if not entries or entries[0][1].offset > offset + 1:
            return Recovery(self.top, self.epoch, False)
        missed = tuple(pub for _, pub in entries if pub.offset > offset)
        return Recovery(self.top, self.epoch, True, missed)

    def page(
        self, offset: int | None, epoch: str | None, limit: int, now: float
    ) -> list[Publication]:
        """What a ``history`` request gets.

        With a position in the current epoch: the first ``limit`` publications after it, so a
        client can page forward. Otherwise the last ``limit`` ones.
        """
        self.evict(now)
        if limit <= 0:
            return []
        if offset is not None and epoch == self.epoch:
            after = [pub for _, pub in self.entries if pub.offset > offset]
            return after[:limit]
        kept = [pub for _, pub in self.entries]
        return kept[-limit:]

    def idle(self, now: float, keep_for: float) -> bool:
        """Whether this log holds nothing and has been quiet long enough to be forgotten."""
        self.evict(now)
        return not self.entries and now - self.last_active >= keep_for
