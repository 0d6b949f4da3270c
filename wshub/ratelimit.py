"""Per-connection frame rate limiting: a token bucket. Pure; time is passed in."""

from __future__ import annotations

__all__ = ["ABUSE_SECONDS", "RateLimiter"]

ABUSE_SECONDS = 10.0
"""How long a connection may keep exceeding its rate before it is closed with 1008."""


class RateLimiter:
    """Allows ``rate`` frames per second with a burst of one second's worth.

    Every frame takes a token, rejected frames included, as the protocol says: a client that
    floods stays limited for as long as it floods. ``abusive`` turns true once rejections have
    gone on without a single allowed frame for :data:`ABUSE_SECONDS`.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "_violating_since")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._burst = max(1.0, rate)
        self._tokens = self._burst
        self._stamp = now
        self._violating_since: float | None = None

    def allow(self, now: float) -> bool:
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            self._violating_since = None
            return True
        # A rejected frame still costs: the bucket may go into debt, down to one burst.
        self._tokens = max(tokens - 1.0, -self._burst)
        if self._violating_since is None:
            self._violating_since = now
        return False

    def abusive(self, now: float) -> bool:
        since = self._violating_since
        return since is not None and now - since >= ABUSE_SECONDS
