"""Names on the wire: channel and user ids, idempotency keys, and the field types of frames."""

from __future__ import annotations

import re
from typing import Annotated, Final, NewType

from msgspec import Meta

UserId = NewType("UserId", str)
SessionId = NewType("SessionId", str)
ChannelName = NewType("ChannelName", str)

CHANNEL_PATTERN: Final = r"^[A-Za-z0-9_\-.:@]{1,128}$"
# A user id must fit in the channel name ``user:<id>``, so it is shorter than a channel name.
USER_PATTERN: Final = r"^[A-Za-z0-9_\-.:@]{1,100}$"
# fullmatch, not the anchored pattern: ``$`` would also match before a trailing newline.
_CHANNEL_RE: Final = re.compile(CHANNEL_PATTERN[1:-1])
_USER_RE: Final = re.compile(USER_PATTERN[1:-1])


def is_channel_name(name: str) -> bool:
    return _CHANNEL_RE.fullmatch(name) is not None


def is_user_id(user: str) -> bool:
    return _USER_RE.fullmatch(user) is not None


def is_idempotency_key(key: str) -> bool:
    return 1 <= len(key) <= 64


def namespace(channel: str) -> str:
    """The part before the first ``:``, which permissions are written against."""
    return channel.partition(":")[0]


Channel = Annotated[str, Meta(min_length=1, max_length=128, pattern=CHANNEL_PATTERN)]
User = Annotated[str, Meta(min_length=1, max_length=100, pattern=USER_PATTERN)]
FrameId = int | str
Offset = Annotated[int, Meta(ge=0)]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=64)]
