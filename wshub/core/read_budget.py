"""What a connection may read of channels it has not joined: ``history`` and ``presence``.

Reading needs only the ``join`` permission, not a join, so the channel limit does not bound it.
Each such read costs the node a broker round trip and a reply (and, with Redis, a channel
position created for a name never used). A token bucket per connection bounds them: bursts of
``--max-channels``, ``--unjoined-read-rate`` a second on average. Reads of joined channels are
free. Pure but for the connections it is given.
"""

from __future__ import annotations

from collections.abc import Callable

from wshub.core.connection import Connection
from wshub.core.ratelimit import RateLimiter
from wshub.protocol import ErrorCode, FrameError, HistoryRequest, PresenceRequest, frame_id

__all__ = ["ReadBudget"]


class ReadBudget:
    """One token bucket per connection that reads channels it has not joined."""

    __slots__ = ("_buckets", "_burst", "_clock", "_rate")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[Connection, RateLimiter] = {}

    def charge(self, conn: Connection, frame: HistoryRequest | PresenceRequest) -> None:
        """Count a read; FrameError ``limit`` when over budget. Joined channels are free."""
        if self._rate <= 0 or frame.channel in conn.channels:
            return
        now = self._clock()
        bucket = self._buckets.get(conn)
        if bucket is None:
            bucket = self._buckets[conn] = RateLimiter(self._rate, now, burst=self._burst)
        if not bucket.allow(now):
            raise FrameError(
                ErrorCode.LIMIT,
                "too many history/presence requests for channels not joined: join the "
                "channel, or slow down",
                frame_id(frame),
            )

    def forget(self, conn: Connection) -> None:
        """The connection is gone: its bucket goes with it."""
        self._buckets.pop(conn, None)

    def __len__(self) -> int:
        return len(self._buckets)
