"""Who is in which channel, counted per connection. Pure.

A user is a member while at least one of their connections has joined; ``member_joined`` is
due when the first one joins and ``member_left`` when the last one leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PresenceEntry", "PresenceTable"]


@dataclass(slots=True)
class PresenceEntry:
    """One user in one channel of a :class:`PresenceTable`: their connections there."""

    user: str
    meta: bytes
    """Raw JSON, from the user's most recent join."""
    sessions: set[str] = field(default_factory=set)


class PresenceTable:
    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, PresenceEntry]] = {}

    def add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        """Record a join; True when it is the user's first connection in the channel."""
        members = self._channels.setdefault(channel, {})
        info = members.get(user)
        if info is None:
            members[user] = PresenceEntry(user, meta, {session})
            return True
        info.meta = meta
        info.sessions.add(session)
        return False

    def remove(self, channel: str, user: str, session: str) -> bytes | None:
        """Record a leave; the user's meta when it was their last connection, else None."""
        members = self._channels.get(channel)
        if members is None:
            return None
        info = members.get(user)
        if info is None or session not in info.sessions:
            return None
        info.sessions.discard(session)
        if info.sessions:
            return None
        del members[user]
        if not members:
            del self._channels[channel]
        return info.meta

    def members(self, channel: str) -> list[PresenceEntry]:
        return list(self._channels.get(channel, {}).values())

    def channels(self) -> list[str]:
        return list(self._channels)
