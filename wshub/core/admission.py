"""Admission: whether a node takes one more connection, counted before the upgrade.

The answer is a reason, not a status: the transport turns a :class:`Refused` into an HTTP
denial response (503 with ``Retry-After``) or a close code, whichever its client can read.
Counting is synchronous, so two handshakes arriving together cannot both take the last place.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from wshub.model.config import Settings

__all__ = ["UNIDENTIFIED", "Admission", "Refused"]

UNIDENTIFIED = ""
"""Whom a connection waiting for its ``auth`` frame is admitted as: no user (never a valid
user id), counted against the node's cap but not against any user's."""


class Refused(enum.Enum):
    """Why a node does not take a connection now. Each is temporary: come back later."""

    DRAINING = "this node is shutting down: connect again"
    NODE_FULL = "connection limit reached on this node"
    USER_FULL = "connection limit reached for this user"

    @property
    def reason(self) -> str:
        """The sentence a refused client reads."""
        return self.value


class Admission:
    """The node's connection counts, in total and per user."""

    __slots__ = ("_draining", "_per_user", "_settings", "admitted")

    def __init__(self, settings: Settings, draining: Callable[[], bool]) -> None:
        self._settings = settings
        self._draining = draining
        self.admitted = 0
        """Connections counted in and not yet out: the node's connection count."""
        self._per_user: dict[str, int] = {}

    def admit(self, user: str) -> Refused | None:
        """Count a connection in, or say why not."""
        refused = self.check(user)
        if refused is None:
            self.admitted += 1
            self._per_user[user] = self._per_user.get(user, 0) + 1
        return refused

    def check(self, user: str) -> Refused | None:
        """Why a connection of ``user`` would be refused now, or None; counts nothing."""
        s = self._settings
        if self._draining():
            return Refused.DRAINING
        if self.admitted >= s.max_connections:
            return Refused.NODE_FULL
        per_user = self._per_user.get(user, 0)
        limited = s.max_connections_per_user and user != UNIDENTIFIED
        if limited and per_user >= s.max_connections_per_user:
            return Refused.USER_FULL
        return None

    def release(self, user: str) -> None:
        """Count a connection out; every successful :meth:`admit` is paired with one."""
        self.admitted -= 1
        left = self._per_user[user] - 1
        if left:
            self._per_user[user] = left
        else:
            del self._per_user[user]
