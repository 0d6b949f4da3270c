"""Server frames: the structs a server sends, encoded once to the text on the wire."""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from wshub.protocol.codes import ErrorCode
from wshub.protocol.names import FrameId

# --- server frames ---------------------------------------------------------------------------


class ServerInfo(Struct):
    """The server's name and version."""

    name: str
    version: str
    node: str | UnsetType = UNSET
    """Which node (process) serves this connection: useful behind a load balancer."""


class Welcome(Struct, tag="welcome", tag_field="type"):
    """First frame after the upgrade, or the reply to ``auth``; ``heartbeat`` is the ping
    interval in seconds, ``expires`` the token's ``exp`` (Unix seconds; null: never)."""

    user: str
    session: str
    server: ServerInfo
    heartbeat: float
    expires: int | None = None
    id: FrameId | UnsetType = UNSET


class Joined(Struct, tag="joined", tag_field="type"):
    """Reply to ``join``: the channel's position, and whether missed messages follow."""

    channel: str
    offset: int
    epoch: str
    recovered: bool
    id: FrameId | UnsetType = UNSET


class Left(Struct, tag="left", tag_field="type"):
    """Reply to ``leave``."""

    channel: str
    id: FrameId | UnsetType = UNSET


class Ack(Struct, tag="ack", tag_field="type"):
    """Reply to ``publish`` (with the message's channel, offset and epoch), to ``send``, and
    to ``refresh`` (with the new token's ``expires``: Unix seconds, or null)."""

    id: FrameId | UnsetType = UNSET
    channel: str | UnsetType = UNSET
    offset: int | UnsetType = UNSET
    epoch: str | UnsetType = UNSET
    expires: int | UnsetType | None = UNSET


class Message(Struct, tag="message", tag_field="type"):
    """A publication in a joined channel, in offset order; ``from`` is null for the HTTP API."""

    channel: str
    offset: int
    epoch: str
    from_: str | None = msgspec.field(name="from")
    data: Raw | Any = None
    ts: int = 0


class Direct(Struct, tag="direct", tag_field="type"):
    """A ``send`` addressed to this connection's user."""

    from_: str | None = msgspec.field(name="from")
    data: Raw | Any = None
    ts: int = 0


class MemberJoined(Struct, tag="member_joined", tag_field="type"):
    """A user's first connection joined the channel (not sent for one's own joins)."""

    channel: str
    user: str
    meta: Raw | Any = None


class MemberLeft(Struct, tag="member_left", tag_field="type"):
    """A user's last connection left the channel."""

    channel: str
    user: str
    meta: Raw | Any = None


class Member(Struct):
    """One user present in a channel, with their latest join ``meta``."""

    user: str
    meta: Raw | Any
    connections: int


class Presence(Struct, tag="presence", tag_field="type"):
    """Reply to ``presence``: everyone in the channel."""

    channel: str
    members: list[Member]
    id: FrameId | UnsetType = UNSET


class History(Struct, tag="history", tag_field="type"):
    """Reply to ``history``: ``message`` frames, oldest first, and the current epoch."""

    channel: str
    epoch: str
    messages: list[Raw]
    id: FrameId | UnsetType = UNSET


class Pong(Struct, tag="pong", tag_field="type"):
    """Reply to ``ping``."""

    id: FrameId | UnsetType = UNSET


class Subscribed(Struct, tag="subscribed", tag_field="type"):
    """The server joined this connection to a channel (the token's ``channels`` claim, or
    the HTTP API): its position now; its messages follow."""

    channel: str
    offset: int
    epoch: str


class Unsubscribed(Struct, tag="unsubscribed", tag_field="type"):
    """The server took this connection out of a channel: ``server`` (the HTTP API),
    ``permissions`` (a refreshed token no longer allows it) or ``expired`` (its
    subscription token ended)."""

    channel: str
    reason: Literal["server", "permissions", "expired"]


class Error(Struct, tag="error", tag_field="type"):
    """A frame that could not be served; the connection stays open."""

    code: str
    message: str
    id: FrameId | UnsetType = UNSET


ServerFrame = (
    Welcome
    | Joined
    | Left
    | Ack
    | Message
    | Direct
    | MemberJoined
    | MemberLeft
    | Presence
    | History
    | Pong
    | Subscribed
    | Unsubscribed
    | Error
)
SERVER_FRAMES: Final[tuple[type[Struct], ...]] = (
    Welcome,
    Joined,
    Left,
    Ack,
    Message,
    Direct,
    MemberJoined,
    MemberLeft,
    Presence,
    History,
    Pong,
    Subscribed,
    Unsubscribed,
    Error,
)

_encoder: Final = msgspec.json.Encoder()


def encode(frame: ServerFrame) -> str:
    """Encode a server frame to the text that goes on the wire."""
    return _encoder.encode(frame).decode()


def reply_id(frame_id: FrameId | None) -> FrameId | UnsetType:
    """The ``id`` field of a reply: absent when the request carried none."""
    return UNSET if frame_id is None else frame_id


def error(code: ErrorCode, message: str, frame_id: FrameId | None = None) -> str:
    return encode(Error(code=code.value, message=message, id=reply_id(frame_id)))
