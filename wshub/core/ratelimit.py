"""Per-connection frame rate limiting: a token bucket. Pure; time is passed in."""

from __future__ import annotations

__all__ = ["ABUSE_SECONDS", "MAX_PAUSE", "WARN_SECONDS", "RateLimiter"]

ABUSE_SECONDS = 10.0
"""How long a connection may keep exceeding its rate before it is closed with 1008."""

WARN_SECONDS = 1.0
"""At most one ``rate_limited`` error per this many seconds: a flooder gets silence, not a
reply per frame, so that answering it cannot cost the node more than the flood itself."""

MAX_PAUSE = 1.0
"""The longest a rejected frame holds up the reading of its connection."""


class RateLimiter:
    """Allows ``rate`` frames per second with a burst of ``burst`` (one second's worth).

    Every frame takes a token, rejected frames included, as the protocol says: a client that
    floods stays limited for as long as it floods. ``abusive`` turns true once rejections have
    gone on without a single allowed frame for :data:`ABUSE_SECONDS`.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "_violating_since", "_warned")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self._rate = rate
        self._burst = max(1.0, rate if burst is None else burst)
        self._tokens = self._burst
        self._stamp = now
        self._violating_since: float | None = None
        self._warned: float | None = None

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

    def warn(self, now: float) -> bool:
        """Whether a rejection now should be answered: once per :data:`WARN_SECONDS`."""
        if self._warned is not None and now - self._warned < WARN_SECONDS:
            return False
        self._warned = now
        return True

    @property
    def pause(self) -> float:
        """Seconds to wait before reading a connection's next frame after a rejection: half
        the time one token takes. The ASGI server stops reading the socket meanwhile, so a
        flooder is held back by TCP itself and costs the node at most twice its rate in
        frames; half, so that its rejections still run up the debt that ends in 1008."""
        return min(MAX_PAUSE, 0.5 / self._rate) if self._rate > 0 else MAX_PAUSE
