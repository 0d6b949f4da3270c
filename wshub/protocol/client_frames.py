"""Client frames: the structs a client may send, and their one-pass decoding with errors
that name the field. Pure: no I/O.

``data`` and ``meta`` stay as raw JSON (``msgspec.Raw``): the hub never needs to look inside a
publication, so it is neither decoded into Python objects nor encoded again.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from wshub.protocol.codes import ErrorCode
from wshub.protocol.names import (
    Channel,
    FrameId,
    IdempotencyKey,
    Offset,
    User,
    is_channel_name,
    is_user_id,
)

# --- client frames ---------------------------------------------------------------------------


class Since(Struct, forbid_unknown_fields=False):
    """A position in a channel's history: the last offset seen, in the epoch it was seen in."""

    offset: Offset
    epoch: str


class _ClientFrame(Struct, tag_field="type"):
    id: FrameId | UnsetType = UNSET


class Join(_ClientFrame, tag="join"):
    """Subscribe to a channel; with ``since``, also get what was missed after that position.

    ``token`` is a subscription token: a JWT for this user and this channel (its ``channel``
    claim) that allows the join beyond the connection's own ``join`` patterns, until its
    ``exp``.
    """

    channel: Channel = ""
    since: Since | UnsetType = UNSET
    meta: Raw | UnsetType = UNSET
    token: str | UnsetType = UNSET


class Leave(_ClientFrame, tag="leave"):
    """Unsubscribe from a channel."""

    channel: Channel = ""


class Publish(_ClientFrame, tag="publish"):
    """Publish ``data`` (any JSON) to a channel; joining it is not required.

    A repeat with the same ``idempotency_key`` within the idempotency TTL is not published
    again: it is answered with the first one's offset and epoch.
    """

    channel: Channel = ""
    data: Raw | UnsetType = UNSET
    idempotency_key: IdempotencyKey | UnsetType = UNSET


class Send(_ClientFrame, tag="send"):
    """Send ``data`` to every connection of user ``to``, on every node. Not stored."""

    to: User = ""
    data: Raw | UnsetType = UNSET


class PresenceRequest(_ClientFrame, tag="presence"):
    """Ask who is in a channel, cluster-wide."""

    channel: Channel = ""


class HistoryRequest(_ClientFrame, tag="history"):
    """Ask for a page of a channel's history (last ``limit``, or after ``since``)."""

    channel: Channel = ""
    since: Since | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=0)] = 100


class Ping(_ClientFrame, tag="ping"):
    """Check that the link and the server are alive; answered with ``pong``."""


class Auth(_ClientFrame, tag="auth"):
    """Identify the connection with a JWT: the first frame, when the token is not in the URL
    or an ``Authorization`` header. Answered with ``welcome``; a bad token closes with 4003."""

    token: str = ""


class Refresh(_ClientFrame, tag="refresh"):
    """Replace the connection's token (same ``sub``) and its permissions, without a reconnect.
    Answered with ``ack`` and the new ``expires``."""

    token: str = ""


ClientFrame = (
    Join | Leave | Publish | Send | PresenceRequest | HistoryRequest | Ping | Auth | Refresh
)
CLIENT_FRAMES: Final[tuple[type[_ClientFrame], ...]] = (
    Join,
    Leave,
    Publish,
    Send,
    PresenceRequest,
    HistoryRequest,
    Ping,
    Auth,
    Refresh,
)
CLIENT_TYPES: Final = frozenset(str(f.__struct_config__.tag) for f in CLIENT_FRAMES)
# Fields that the structs give a placeholder default so that a frame missing them still
# decodes far enough to be answered with its ``id``; they are required on the wire.
REQUIRED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "join": ("channel",),
    "leave": ("channel",),
    "publish": ("channel", "data"),
    "send": ("to", "data"),
    "presence": ("channel",),
    "history": ("channel",),
    "ping": (),
    "auth": ("token",),
    "refresh": ("token",),
}

_decoder: Final = msgspec.json.Decoder(ClientFrame)
# float_hook: a number such as 1e400 is valid JSON that msgspec refuses as out of range; the
# lenient pass must still parse it, to answer bad_request naming the field, not bad_json.
_lenient_decoder: Final = msgspec.json.Decoder(float_hook=float)


class FrameError(Exception):
    """A client frame that cannot be served. Carries what the ``error`` reply needs."""

    def __init__(self, code: ErrorCode, message: str, frame_id: FrameId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


def decode_client_frame(text: str | bytes) -> ClientFrame:
    """Decode and validate one client frame, or raise :class:`FrameError`.

    The fast path is one msgspec pass. Only a frame that fails it is decoded a second time,
    leniently, to find its ``id`` and tell ``bad_json`` from ``unknown_type`` and
    ``bad_request``; bad input costs more than good input, never the reverse.
    """
    if not isinstance(text, str):
        # msgspec does not check the UTF-8 of a value it keeps raw (``data``), and an invalid
        # byte inside a string raises UnicodeDecodeError: check the whole frame up front. A
        # WebSocket text frame is already valid UTF-8, so the server never pays for this.
        try:
            text = bytes(text).decode()
        except UnicodeDecodeError as exc:
            raise FrameError(ErrorCode.BAD_JSON, f"not valid UTF-8: {exc.reason}") from None
    try:
        frame: ClientFrame = _decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise _explain(text, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise FrameError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise FrameError(ErrorCode.BAD_JSON, "JSON nested too deeply") from None
    except UnicodeEncodeError:  # a str with lone surrogates: not something UTF-8 can carry
        raise FrameError(ErrorCode.BAD_JSON, "not valid UTF-8: lone surrogate") from None
    tag = frame.__struct_config__.tag
    assert isinstance(tag, str)
    for field in REQUIRED_FIELDS[tag]:
        if getattr(frame, field) in ("", UNSET):
            raise FrameError(
                ErrorCode.BAD_REQUEST, f'"{tag}" requires the field "{field}"', _id_of(frame)
            )
    channel = getattr(frame, "channel", None)
    # The struct's pattern check lets a trailing newline through (``$``); fullmatch does not.
    if channel is not None and not is_channel_name(channel):
        raise FrameError(ErrorCode.BAD_REQUEST, f"invalid channel name {channel!r}", _id_of(frame))
    if isinstance(frame, Send) and not is_user_id(frame.to):
        raise FrameError(ErrorCode.BAD_REQUEST, f"invalid user id {frame.to!r}", _id_of(frame))
    return frame


def _id_of(frame: ClientFrame) -> FrameId | None:
    return None if frame.id is UNSET else frame.id


def _explain(text: str | bytes, detail: str) -> FrameError:
    """Turn a msgspec validation failure into the error code the protocol names."""
    try:
        obj = _lenient_decoder.decode(text)
    except (msgspec.DecodeError, RecursionError):  # pragma: no cover - the strict pass parsed it
        return FrameError(ErrorCode.BAD_JSON, "not valid JSON")
    if not isinstance(obj, dict):
        return FrameError(ErrorCode.BAD_JSON, f"expected a JSON object, got {_json_type(obj)}")
    frame_id = obj.get("id")
    if "id" in obj and (not isinstance(frame_id, int | str) or isinstance(frame_id, bool)):
        return FrameError(
            ErrorCode.BAD_REQUEST,
            f'expected "id" to be an integer or a string, got {_json_type(frame_id)}',
        )
    kind = obj.get("type")
    if not isinstance(kind, str):
        what = "missing" if kind is None else _json_type(kind)
        return FrameError(
            ErrorCode.BAD_REQUEST, f'expected "type" to be a string, got {what}', frame_id
        )
    if kind not in CLIENT_TYPES:
        return FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind!r}", frame_id)
    return FrameError(ErrorCode.BAD_REQUEST, f"invalid {kind!r} frame: {_reword(detail)}", frame_id)


_MSGSPEC_DETAIL: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$\.(?P<path>[^`]*)`)?$", re.S)


def _reword(detail: str) -> str:
    """msgspec's "Expected `str`, got `int` - at `$.channel`" as 'expected "channel" ...'."""
    match = _MSGSPEC_DETAIL.match(detail)
    if match is None or match["path"] is None:  # pragma: no cover - msgspec always matches
        return detail
    what, path = match["what"], match["path"]
    if path == "channel" and "regex" in what:
        return '"channel" must be 1 to 128 of A-Z a-z 0-9 _ - . : @'
    if path == "to" and "regex" in what:
        return '"to" must be a user id: 1 to 100 of A-Z a-z 0-9 _ - . : @'
    what = what.replace("`", "")
    return f'"{path}": {what[:1].lower()}{what[1:]}'


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case _:
            return "object"


def frame_id(frame: ClientFrame) -> FrameId | None:
    return _id_of(frame)
