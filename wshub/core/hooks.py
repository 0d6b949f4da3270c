"""The hooks a library user plugs into a :class:`~wshub.Hub`, and how a hook refuses.

Hooks are plain async callables. They run on the event loop inside the hub's handling of a
frame, so a slow hook delays only the connection whose frame it is serving.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from wshub.core.channel_rules import ChannelRules
from wshub.protocol import ErrorCode

__all__ = [
    "Authorize",
    "BadRequest",
    "Forbidden",
    "HookRefusal",
    "Hooks",
    "OnConnect",
    "OnDisconnect",
    "OnPublish",
]

Authorize = Callable[[str, str, str], Awaitable[bool]]
"""``authorize(user, action, channel) -> bool``; action is ``"join"`` or ``"publish"``.

``presence`` and ``history`` requests are asked as ``"join"``: reading a channel needs the
permission to join it.
"""

OnPublish = Callable[[str, str, Any], Awaitable[Any]]
"""``on_publish(user, channel, data) -> data``: validate or transform a client's publication.

``data`` is the decoded JSON; the return value is what subscribers receive. Raise
:class:`Forbidden` or :class:`BadRequest` to refuse it with that error code.
"""

OnConnect = Callable[[str, str], Awaitable[None]]
"""``on_connect(user, session)``: after the ``welcome`` frame is queued."""

OnDisconnect = Callable[[str, str], Awaitable[None]]
"""``on_disconnect(user, session)``: after the connection has left its channels."""


class HookRefusal(Exception):
    """Raised by a hook to refuse a client's frame; the message goes to the client."""

    code: ClassVar[ErrorCode]


class Forbidden(HookRefusal):
    """Refuse with ``forbidden``: the user may not do this."""

    code = ErrorCode.FORBIDDEN


class BadRequest(HookRefusal):
    """Refuse with ``bad_request``: the content is not acceptable."""

    code = ErrorCode.BAD_REQUEST


@dataclass(slots=True)
class Hooks:
    """One hub's hooks; each is optional."""

    authorize: Authorize | None = None
    on_publish: OnPublish | None = None
    on_connect: OnConnect | None = None
    on_disconnect: OnDisconnect | None = None
    routes: ChannelRules | None = None
    """Channel routes: where one matches, its checks and model apply (see
    :mod:`wshub.core.channel_rules`)."""
