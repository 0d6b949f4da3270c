"""The seam through which a channel's own rules reach the core: who may join or publish, and
what its publications must look like.

A library user declares them as channel routes (:mod:`wshub.app.channel_routes`); the core
asks only :class:`ChannelRules` whether a channel has one, and that rule to check an action
or a publication. A channel without a rule is served by the connection's permissions and the
``authorize`` hook, as before. Nothing here knows FastAPI or pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wshub.core.connection import Connection

__all__ = ["ChannelRule", "ChannelRules", "InvalidData", "describe"]


class InvalidData(ValueError):
    """A publication that does not fit its channel's model.

    ``errors`` are in FastAPI's format: ``{"type", "loc", "msg"}`` each, ``loc`` starting
    where the caller put the data (``"data"`` for a frame, ``"body", "data"`` for HTTP).
    """

    def __init__(self, channel: str, errors: Sequence[Mapping[str, Any]]) -> None:
        self.channel = channel
        self.errors = [dict(e) for e in errors]
        super().__init__(f"invalid data for channel {channel!r}: {describe(self.errors)}")


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """``data.items.0.price: Input should be a valid number [float_parsing]; ...``"""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']} [{e['type']}]" for e in errors
    )


class ChannelRule(Protocol):
    """What one channel route says about one channel."""

    def checks(self, action: str) -> bool:
        """Whether this route decides ``action`` (``"join"`` or ``"publish"``) itself."""
        ...

    async def allows(self, conn: Connection, action: str) -> bool:
        """The route's decision; may raise :class:`~wshub.core.hooks.HookRefusal` or
        :class:`~wshub.protocol.FrameError` to refuse with a reason."""
        ...

    def validate_json(self, data: bytes) -> bytes:
        """The publication as subscribers receive it, or :class:`InvalidData`."""
        ...


class ChannelRules(Protocol):
    def find(self, channel: str) -> ChannelRule | None:
        """The rule of the first route ``channel`` matches, or None."""
        ...
