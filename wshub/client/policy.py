"""What the client does after a close or a refused handshake: the protocol's "client does" table.

| close code                 | client does                                            |
| -------------------------- | ------------------------------------------------------ |
| 1000                       | nothing: the link ends, subscriptions end              |
| 1001, 1011, 1012, 4008     | reconnect with backoff and jitter, join with ``since`` |
| 1006 (no close frame)      | the same: a dropped link or a dead server              |
| 1008, 1009                 | stop, and tell the application                         |
| 1002, 1003, 1007, 1010     | stop: this client is at fault, a retry would repeat it |
| 4001, 4003                 | ask the application for a new token, then reconnect;   |
|                            | stop if it has none                                    |

A refused handshake counts as a close code: 401 as 4001, 403 as 1008, 503 as 1001 (waiting
at least ``Retry-After``). Other refusals: 429 and 5xx are passing (a proxy restarting, a
limit), so reconnect; any other 4xx (400, 404, ...) will not change by retrying, so stop.
Unknown close codes reconnect: a client that stops on a code it does not know would need a
person to restart it, one that retries costs a handshake now and then.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final

__all__ = ["Action", "Backoff", "after_close", "after_refusal", "close_code_of_refusal"]


class Action(enum.Enum):
    NOTHING = "nothing"
    RECONNECT = "reconnect"
    STOP = "stop"
    NEW_TOKEN = "new token"


NO_CLOSE_FRAME: Final = 1006
"""What websockets reports when the link dropped without a close frame."""

_ACTIONS: Final = {
    1000: Action.NOTHING,
    1001: Action.RECONNECT,
    1002: Action.STOP,  # protocol error
    1003: Action.STOP,  # a frame type the server does not take
    1007: Action.STOP,  # not UTF-8
    1008: Action.STOP,
    1009: Action.STOP,
    1010: Action.STOP,  # an extension the server would not negotiate
    1011: Action.RECONNECT,
    1012: Action.RECONNECT,
    4001: Action.NEW_TOKEN,
    4003: Action.NEW_TOKEN,
    4008: Action.RECONNECT,
}

_REFUSAL_CODES: Final = {401: 4001, 403: 1008, 503: 1001}


def after_close(code: int) -> Action:
    return _ACTIONS.get(code, Action.RECONNECT)


def close_code_of_refusal(status: int) -> int:
    """The close code a refused handshake stands for (400 and the like: as 1008)."""
    if status in _REFUSAL_CODES:
        return _REFUSAL_CODES[status]
    return 1001 if status == 429 or status >= 500 else 1008


def after_refusal(status: int) -> Action:
    return after_close(close_code_of_refusal(status))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: half of the doubled delay is random.

    The jitter spreads the reconnects of many clients that lost one server at once.
    """

    minimum: float = 0.25
    maximum: float = 10.0

    def delay(self, attempt: int, at_least: float = 0.0) -> float:
        """Seconds to wait before attempt ``attempt`` (0-based); never under ``at_least``
        (a ``Retry-After``), nor, from it, more than half again."""
        ceiling = min(self.maximum, self.minimum * 2**attempt)
        wait = random.uniform(ceiling / 2, ceiling)
        if at_least > wait:
            wait = random.uniform(at_least, at_least * 1.5)
        return wait
