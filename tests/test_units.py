"""Pure pieces: channel history, presence, rate limiting, settings."""

from __future__ import annotations

import pytest

from wshub.core.ratelimit import ABUSE_SECONDS, RateLimiter
from wshub.model.config import MIB, Settings
from wshub.model.history import ChannelLog
from wshub.model.presence import PresenceTable


def filled(n: int, size: int = 100, ttl: float = 300, now: float = 0.0) -> ChannelLog:
    log = ChannelLog(size, ttl, epoch="e")
    for i in range(n):
        log.append("c", str(i).encode(), "u", 0, now)
    return log


def test_offsets_start_at_one_and_grow_by_one() -> None:
    log = filled(3)
    assert [pub.offset for _, pub in log.entries] == [1, 2, 3]
    assert log.top == 3


def test_recovery_cases() -> None:
    log = filled(10, size=5)  # keeps 6..10
    assert log.recover(None, None, 0).recovered is False
    rec = log.recover(7, "e", 0)
    assert rec.recovered and [p.offset for p in rec.publications] == [8, 9, 10]
    assert log.recover(5, "e", 0).recovered  # 6.. retained: nothing evicted after 5
    assert not log.recover(4, "e", 0).recovered  # 5 was evicted
    assert not log.recover(7, "other", 0).recovered
    assert not log.recover(11, "e", 0).recovered  # beyond the current offset
    current = log.recover(10, "e", 0)
    assert current.recovered and current.publications == ()


def test_recovery_at_the_top_survives_ttl_expiry() -> None:
    log = filled(3, ttl=10)
    assert log.recover(3, "e", 100).recovered
    assert not log.recover(2, "e", 100).recovered  # 3 expired


def test_history_pages() -> None:
    log = filled(10)
    assert [p.offset for p in log.page(None, None, 3, 0)] == [8, 9, 10]
    assert [p.offset for p in log.page(2, "e", 3, 0)] == [3, 4, 5]
    assert [p.offset for p in log.page(2, "old", 3, 0)] == [8, 9, 10]
    assert log.page(None, None, 0, 0) == []
    assert [p.offset for p in log.page(None, None, 1000, 0)] == list(range(1, 11))


def test_history_ttl_and_idle() -> None:
    log = filled(3, ttl=10, now=0)
    assert log.page(None, None, 10, 5) != []
    assert log.page(None, None, 10, 11) == []
    assert not log.idle(11, keep_for=100)
    assert log.idle(200, keep_for=100)


def test_presence_counts_connections() -> None:
    table = PresenceTable()
    assert table.add("c", "alice", "s1", b"1")
    assert not table.add("c", "alice", "s2", b"2")
    assert [(m.user, m.meta, len(m.sessions)) for m in table.members("c")] == [("alice", b"2", 2)]
    assert table.remove("c", "alice", "s1") is None
    assert table.remove("c", "alice", "nope") is None
    assert table.remove("c", "bob", "s1") is None
    assert table.remove("c", "alice", "s2") == b"2"
    assert table.members("c") == []
    assert table.channels() == []
    assert table.remove("gone", "alice", "s1") is None


def test_rate_limiter_allows_its_rate_and_counts_rejections() -> None:
    limiter = RateLimiter(5, now=0)
    assert sum(limiter.allow(0) for _ in range(20)) == 5  # a burst of one second's worth
    assert not limiter.allow(0.5)  # rejected frames put it in debt
    assert limiter.allow(3.0)


def test_rate_limiter_abuse_after_ten_seconds_of_flooding() -> None:
    limiter = RateLimiter(10, now=0)
    t = 0.0
    while t < ABUSE_SECONDS + 1:
        limiter.allow(t)
        t += 0.01  # 100 frames per second: ten times the limit
        if limiter.abusive(t):
            break
    assert limiter.abusive(t)
    assert t >= ABUSE_SECONDS


def test_settings_defaults_and_hard_cap() -> None:
    s = Settings()
    assert (s.max_connections, s.max_frame_bytes, s.max_channels, s.queue_size) == (
        10_000,
        65_536,
        128,
        1024,
    )
    assert s.hard_frame_bytes == MIB
    assert Settings(max_frame_bytes=MIB).hard_frame_bytes == 16 * MIB


@pytest.mark.parametrize(
    "bad",
    [
        {"max_connections": -1},
        {"queue_size": 0},
        {"max_frame_bytes": 0},
        {"retry_after": 0},
        {"rate_limit": -2.0},
    ],
)
def test_settings_refuse_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Settings(**bad).validate()  # type: ignore[arg-type]
