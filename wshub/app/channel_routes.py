"""Channel routes: ``hub.channel("orders:{order_id}", model=OrderEvent)``, FastAPI's routes for
channels.

A route names a family of channels with a pattern, where ``{name}`` stands for one part of
the name between ``:`` (as ``{name}`` in a FastAPI path stands for one part between ``/``).
Its ``model`` (anything pydantic validates: a ``BaseModel``, a dataclass, ``list[Item]``, a
union) is what every publication to those channels must be, from clients, ``hub.publish`` and
the HTTP API alike; subscribers receive the validated model's JSON. Its checks,
``@route.can_join`` and ``@route.can_publish``, decide who may join (and read) and who may
publish, with FastAPI dependencies (:mod:`wshub.app.dependencies`). A channel takes the first
route it matches, in the order they were declared; one that matches none is served by the
connection's permissions and the ``authorize`` hook, as is an action its route has no check
for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from wshub import protocol
from wshub.app.dependencies import Check, Handshakes, Scope
from wshub.core.channel_rules import InvalidData
from wshub.core.connection import Connection

__all__ = ["ChannelRoute", "ChannelRoutes", "Match"]

F = TypeVar("F", bound=Callable[..., Any])

_PARAM = re.compile(r"\{([^{}]*)\}")
_LITERAL = re.compile(r"[A-Za-z0-9_\-.:@]*")


def _compile(pattern: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    parts: list[str] = []
    names: list[str] = []
    last = 0
    for found in _PARAM.finditer(pattern):
        name = found.group(1)
        if not name.isidentifier():
            raise ValueError(f"{pattern!r}: {{{name}}} is not a parameter name")
        if name in names:
            raise ValueError(f"{pattern!r}: {{{name}}} appears twice")
        parts.append(_literal(pattern, pattern[last : found.start()]))
        parts.append(f"(?P<{name}>[^:]+)")
        names.append(name)
        last = found.end()
    parts.append(_literal(pattern, pattern[last:]))
    return re.compile("".join(parts)), tuple(names)


def _literal(pattern: str, text: str) -> str:
    if not _LITERAL.fullmatch(text):
        raise ValueError(
            f"{pattern!r}: outside its {{parameters}}, a channel pattern has only the "
            "characters of a channel name (A-Z a-z 0-9 _ - . : @)"
        )
    return re.escape(text)


class ChannelRoute:
    """One family of channels: its pattern, payload model and checks."""

    def __init__(self, pattern: str, model: Any = None, description: str = "") -> None:
        self.pattern = pattern
        self.regex, self.params = _compile(pattern)
        self.model = model
        self.description = description
        self.adapter: TypeAdapter[Any] | None = None if model is None else TypeAdapter(model)
        self.checks: dict[str, Check] = {}

    def can_join(self, check: F) -> F:
        """Decorate the check that decides joins (and ``presence``, ``history``) of these
        channels: True allows, anything else is ``forbidden``."""
        return self._check("join", check)

    def can_publish(self, check: F) -> F:
        """Decorate the check that decides publications from clients to these channels."""
        return self._check("publish", check)

    def _check(self, action: str, check: F) -> F:
        if action in self.checks:
            raise ValueError(f"{self.pattern!r} already has a can_{action} check")
        self.checks[action] = Check(self.pattern, check)
        return check

    def validate_json(self, channel: str, data: bytes, loc: tuple[str, ...]) -> bytes:
        """``data`` (JSON) as the model's JSON, or :class:`InvalidData` naming the fields."""
        if self.adapter is None:
            return data
        try:
            return self.adapter.dump_json(self.adapter.validate_json(data))
        except ValidationError as exc:
            raise InvalidData(channel, _errors(exc, loc)) from None

    def validate_value(self, channel: str, value: Any, loc: tuple[str, ...]) -> bytes:
        """A Python value (a model instance, or its plain JSON form) as the model's JSON."""
        assert self.adapter is not None
        try:
            return self.adapter.dump_json(self.adapter.validate_python(value))
        except ValidationError as exc:
            raise InvalidData(channel, _errors(exc, loc)) from None


def _errors(exc: ValidationError, loc: tuple[str, ...]) -> list[dict[str, Any]]:
    # Without the input: it is whatever the client sent, and would be echoed to it.
    return [
        {"type": e["type"], "loc": [*loc, *e["loc"]], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


class Match:
    """A channel that matched a route: the core's :class:`~wshub.core.channel_rules.ChannelRule`."""

    __slots__ = ("_handshakes", "channel", "params", "route")

    def __init__(
        self, route: ChannelRoute, channel: str, params: dict[str, str], handshakes: Handshakes
    ) -> None:
        self.route = route
        self.channel = channel
        self.params = params
        self._handshakes = handshakes

    def checks(self, action: str) -> bool:
        return action in self.route.checks

    async def allows(self, conn: Connection, action: str) -> bool:
        check = self.route.checks[action]
        return await self._handshakes.decide(check, conn, dict(self.params))

    def validate_json(self, data: bytes) -> bytes:
        return self.route.validate_json(self.channel, data, ("data",))


class ChannelRoutes:
    """A hub's channel routes, in the order they were declared, and the connections' handshakes
    their checks read."""

    def __init__(self) -> None:
        self._routes: list[ChannelRoute] = []
        self.handshakes = Handshakes()
        self._find = lru_cache(maxsize=4096)(self._match)

    def add(self, pattern: str, model: Any = None, description: str = "") -> ChannelRoute:
        route = ChannelRoute(pattern, model, description)
        self._routes.append(route)
        self._find.cache_clear()
        return route

    def __iter__(self) -> Iterator[ChannelRoute]:
        return iter(self._routes)

    def opened(self, conn: Connection, scope: Scope) -> None:
        """Keep ``conn``'s handshake for the checks to read; only where there are routes, so
        that a hub without any keeps no request per connection."""
        if self._routes:
            self.handshakes.opened(conn, scope)

    def closed(self, conn: Connection) -> None:
        self.handshakes.closed(conn)

    def find(self, channel: str) -> Match | None:
        # Cached: a channel's route is looked up on every publication to it.
        return self._find(channel) if self._routes else None

    def _match(self, channel: str) -> Match | None:
        for route in self._routes:
            found = route.regex.fullmatch(channel)
            if found is not None:
                return Match(route, channel, found.groupdict(), self.handshakes)
        return None

    def payload(self, channel: str, value: Any, loc: tuple[str, ...]) -> bytes | None:
        """``value`` validated by the channel's model, as JSON; None when it has no model."""
        if not protocol.is_channel_name(channel):
            return None  # the caller refuses the name
        match = self.find(channel)
        if match is None or match.route.adapter is None:
            return None
        return match.route.validate_value(channel, value, loc)
