"""Channel permissions: which channels one connection may join and publish to.

A token's ``join`` and ``publish`` claims are lists of channel patterns, where ``*`` stands for
any run of characters (``:`` included), so ``chat:*`` covers ``chat:lobby`` and
``chat:team:1``, and ``*`` alone covers every channel. Nothing else in a pattern is special.

Permissions belong to a connection, not to a user: two connections of one user may carry
tokens with different claims. The hub asks :meth:`Permissions.allows` and knows nothing of
where the patterns came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["Permissions", "own_channel"]


def own_channel(user: str) -> str:
    """The channel every user may always join: direct notifications addressed to them."""
    return f"user:{user}"


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = ["(?:" + ".*".join(map(re.escape, p.split("*"))) + ")" for p in patterns]
    return re.compile("|".join(parts), re.DOTALL) if parts else None


class Permissions:
    """What one connection may do, from the patterns it was granted."""

    __slots__ = ("_join", "_own", "_publish", "join", "publish")

    def __init__(self, user: str, join: Iterable[str] = (), publish: Iterable[str] = ()) -> None:
        self.join = tuple(join)
        self.publish = tuple(publish)
        self._own = own_channel(user)
        self._join = _compile(self.join)
        self._publish = _compile(self.publish)

    def allows(self, action: str, channel: str) -> bool:
        """Whether ``action`` (``"join"`` or ``"publish"``) on ``channel`` is permitted.

        Reading a channel (``presence``, ``history``) is a ``join``.
        """
        if action == "join":
            if channel == self._own:
                return True
            pattern = self._join
        elif action == "publish":
            pattern = self._publish
        else:
            return False
        return pattern is not None and pattern.fullmatch(channel) is not None

    def __repr__(self) -> str:
        return f"Permissions(join={list(self.join)}, publish={list(self.publish)})"
