"""The time the hub's limits run on, in one place so that tests can replace it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["Clock"]


class Clock:
    """Shared by every part of one hub: replacing ``now`` or ``sleep`` changes them all."""

    __slots__ = ("now", "sleep")

    def __init__(self) -> None:
        self.now: Callable[[], float] = time.monotonic
        """The clock of rate limits and read budgets."""
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        """How a rate-limited connection's reader is held back."""
