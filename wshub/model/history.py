"""A channel's history: its offsets, its epoch and its last N publications. Pure.

Used by the in-memory broker, and the reference for what any broker's history must answer.
Time is passed in, never read, so tests can move it.
"""

from __future__ import annotations

import io
import secrets
from collections import deque
from collections.abc import Container, Sequence
from dataclasses import dataclass

from msgspec import Raw

from wshub import protocol
from wshub.model.publication import Publication

__all__ = [
    "ChannelLog",
    "ChannelLogs",
    "Recovery",
    "history_frame",
    "new_epoch",
    "page",
    "recover",
]


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
    are docs/protocol.md's: recovered only when nothing after ``offset`` has been evicted.
    """
    if offset is None or since_epoch != epoch or offset > top:
        return Recovery(top, epoch, False)
    if offset == top:
        return Recovery(top, epoch, True)
    if not kept or kept[0].offset > offset + 1:
        return Recovery(top, epoch, False)
    return Recovery(top, epoch, True, tuple(pub for pub in kept if pub.offset > offset))


def history_frame(
    channel: str, epoch: str, pubs: Sequence[Publication], frame_id: protocol.FrameId | None
) -> str:
    """The ``history`` reply, built one message at a time.

    A page can be as large as the history (100 messages of 64 KiB by default, more when
    configured): encoding it from a list of every message's text would hold all of them at
    once, and the allocator keeps such memory after it is freed. Here each message's text
    lives only while it is copied into the reply.
    """
    shell = protocol.encode(
        protocol.History(
            channel=channel, epoch=epoch, messages=[Raw(b"0")], id=protocol.reply_id(frame_id)
        )
    )
    # Quotes inside JSON strings are escaped, so this marker can only be the field itself.
    before, marker, after = shell.partition('"messages":[0]')
    assert marker, shell
    out = io.StringIO()
    out.write(before)
    out.write('"messages":[')
    for n, pub in enumerate(pubs):
        if n:
            out.write(",")
        out.write(pub.text())
    out.write("]")
    out.write(after)
    return out.getvalue()


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
        # History keeps a copy of its own: the one returned is fanned out and caches its
        # encoded frame for that, a cache that must not live as long as the history does.
        self.entries.append((now, Publication(channel, self.top, self.epoch, sender, data, ts)))
        self.last_active = now
        return Publication(channel, self.top, self.epoch, sender, data, ts)

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


class ChannelLogs:
    """Every channel's log on one node; a log exists only once its channel has a publication.

    Reading a channel that has none (a join's recovery, ``history``) creates nothing: it is
    answered as an empty channel at offset 0 in :attr:`fresh`, the epoch its first publication
    will start. So naming channels, however many, leaves nothing behind on the node. ``fresh``
    changes whenever a log with publications is forgotten, so that a channel's next life never
    reuses the epoch of a past one.
    """

    __slots__ = ("_logs", "fresh", "keep_position", "size", "ttl")

    def __init__(self, size: int, ttl: float, keep_position: float) -> None:
        self.size = size
        self.ttl = ttl
        self.keep_position = keep_position
        self.fresh = new_epoch()
        self._logs: dict[str, ChannelLog] = {}

    def __len__(self) -> int:
        return len(self._logs)

    def append(
        self, channel: str, data: bytes, sender: str | None, ts: int, now: float
    ) -> Publication:
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = ChannelLog(self.size, self.ttl, self.fresh)
        return log.append(channel, data, sender, ts, now)

    def recover(self, channel: str, offset: int | None, epoch: str | None, now: float) -> Recovery:
        log = self._logs.get(channel)
        if log is None:
            return recover(0, self.fresh, (), offset, epoch)
        return log.recover(offset, epoch, now)

    def page(
        self, channel: str, offset: int | None, epoch: str | None, limit: int, now: float
    ) -> tuple[str, list[Publication]]:
        log = self._logs.get(channel)
        if log is None:
            return self.fresh, []
        return log.epoch, log.page(offset, epoch, limit, now)

    def sweep(self, now: float, keep: Container[str]) -> int:
        """Forget quiet logs of channels not in ``keep``; returns how many were forgotten."""
        idle = [
            name
            for name, log in self._logs.items()
            if name not in keep and log.idle(now, self.keep_position)
        ]
        for name in idle:
            del self._logs[name]
        if idle:
            self.fresh = new_epoch()
        return len(idle)

    def clear(self) -> None:
        """Forget every channel, as a restart would."""
        self._logs.clear()
        self.fresh = new_epoch()
