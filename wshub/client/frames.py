"""What the client hands the application: messages, events, and why a request or a link failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from wshub.client.policy import close_code_of_refusal

__all__ = [
    "ConnectionLost",
    "Direct",
    "Gap",
    "MemberEvent",
    "Message",
    "Refused",
    "ServerError",
    "Stopped",
    "Unsubscribed",
    "message_of",
    "ws_url",
]

FrameDict = dict[str, Any]
"""A protocol frame as its decoded JSON object, sent or received (not
:class:`wshub.protocol.wire.SharedFrame`, a server frame encoded once)."""


class ServerError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ConnectionError):
    """The link dropped before the reply came: the request may or may not have been served."""


class Refused(ConnectionError):
    """The server refused the handshake with an HTTP status (401, 403, 503, ...), or
    refused the token of the ``auth`` frame (then ``code`` is 4003 and ``status`` 401).

    ``reason`` is the body of the refusal: the server says there why (``token expired``,
    ``signature does not verify``, ``connection limit reached on this node``, ...).
    ``code`` is the close code the refusal counts as (401: 4001, 403: 1008, 503: 1001).
    """

    def __init__(
        self,
        status: int,
        retry_after: str | None = None,
        reason: str = "",
        code: int | None = None,
    ) -> None:
        detail = f": {reason}" if reason else ""
        how = (
            f"identity refused with {code}"
            if code == 4003
            else f"handshake refused with HTTP {status}"
        )
        super().__init__(f"{how}{detail}")
        self.status = status
        self.retry_after = retry_after
        self.reason = reason
        self.code = close_code_of_refusal(status) if code is None else code

    @property
    def retry_after_seconds(self) -> float:
        """``Retry-After`` in seconds (0 when absent or given as a date)."""
        try:
            return max(0.0, float(self.retry_after or 0))
        except ValueError:
            return 0.0


class Stopped(ConnectionLost):
    """The client stopped for good and will not reconnect by itself.

    ``code`` is the close code that stopped it (a refused handshake counts as its close code:
    401 as 4001, 403 as 1008); ``reason`` is the server's words. Subscriptions raise it, and
    it is :attr:`Client.stopped`, so the application learns why it heard nothing more.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stopped by the server ({code}): {reason}" if reason else f"{code}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """A channel message. ``sender`` is the ``from`` user, None for the HTTP or library API."""

    channel: str
    offset: int
    epoch: str
    sender: str | None
    data: Any
    ts: int


@dataclass(frozen=True, slots=True)
class Direct:
    """A direct message to this client's user."""

    sender: str | None
    data: Any
    ts: int


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """``member_joined`` or ``member_left`` in a joined channel."""

    kind: Literal["joined", "left"]
    channel: str
    user: str
    meta: Any


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The server took this client out of a channel: ``reason`` is ``server`` (the HTTP or
    library API), ``permissions`` (a refreshed token no longer allows it) or ``expired``
    (its subscription token ended and no fresh one came in time)."""

    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """A resume the server could not serve: messages between the two positions are lost."""

    channel: str
    last_offset: int
    last_epoch: str
    offset: int
    epoch: str


def message_of(frame: FrameDict) -> Message:
    return Message(
        frame["channel"],
        frame["offset"],
        frame["epoch"],
        frame.get("from"),
        frame.get("data"),
        frame.get("ts", 0),
    )


def ws_url(url: str, user: str | None = None) -> str:
    """``http://host:8000`` or ``ws://host:8000`` as the protocol's ``ws://host:8000/ws``.

    ValueError for a URL without a scheme (``127.0.0.1:8000``) or another scheme than
    ws, wss, http or https.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not a ws://, wss://, http:// or https:// URL")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/ws"
    query = parts.query
    if user is not None:
        query = "&".join(q for q in (query, urlencode({"user": user})) if q)
    return urlunsplit((scheme, parts.netloc, path, query, ""))
