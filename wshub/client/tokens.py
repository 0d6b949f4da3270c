"""Where the client's tokens come from: a string, or a function of the application's.

A token function is asked when the client connects, before the token ends (to ``refresh``
it, :mod:`wshub.client.refresh`), and after the server refused one (4001, 4003, HTTP 401).
It returns None when there is no token to be had: the client then stops.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable

__all__ = [
    "SubscriptionTokenFunction",
    "TokenFunction",
    "TokenSource",
    "expiry_of",
    "renew_in",
]

log = logging.getLogger("wshub.client")

TokenFunction = Callable[[], Awaitable[str | None]]
"""An async callable giving a connection token, or None when there is none: the client stops."""

SubscriptionTokenFunction = Callable[[str], Awaitable[str | None]]
"""An async callable giving the subscription token for a channel, or None to join it
without one (a channel the connection token's ``join`` patterns already allow)."""

TokenSource = str | TokenFunction


def expiry_of(token: str) -> float | None:
    """The ``exp`` claim of a JWT (Unix seconds), read without verifying it: the server
    verifies; the client only needs to know when to ask for the next one. None when the token
    has no ``exp`` or is not a JWT the client can read."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        log.warning("cannot read the exp of a token: it will not be renewed before it ends")
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def renew_in(expires: float, now: float | None = None) -> float:
    """Seconds from now until a token ending at ``expires`` should be renewed.

    At a random moment between 75 % and 90 % of the time it has left, so that many clients
    given tokens at once do not all come back at once, and a slow token function or a slow
    link still has the last tenth of the lifetime to finish in.
    """
    left = expires - (time.time() if now is None else now)
    return max(0.0, left * random.uniform(0.75, 0.9))
