"""A subscription whose messages are instances of a model: ``client.subscribe("orders:42",
model=OrderEvent)``, the client's side of a channel route.

Each message's ``data`` is validated by pydantic as ``model`` (a ``BaseModel``, a dataclass,
``list[Line]``...), so ``at`` comes as a ``datetime`` and ``status`` as its enum. Data that
does not fit raises pydantic's ``ValidationError`` from the iteration: with a route on the
server, that means the two sides disagree about the model. pydantic is imported only here.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from wshub.client.channels import Subscription
from wshub.client.frames import Message

__all__ = ["ModelSubscription"]

T = TypeVar("T")


class ModelSubscription(Generic[T]):
    """An async iterator of a channel's messages as ``model`` instances, in order, each once,
    across reconnects, as :class:`~wshub.client.channels.Subscription` yields messages."""

    def __init__(self, subscription: Subscription, model: type[T]) -> None:
        from pydantic import TypeAdapter

        self.subscription = subscription
        self.last: Message | None = None
        """The message the latest instance came in: its offset, sender and time."""
        self._adapter: Any = TypeAdapter(model)

    def __aiter__(self) -> ModelSubscription[T]:
        return self

    async def __anext__(self) -> T:
        message = await self.subscription.__anext__()
        self.last = message
        value: T = self._adapter.validate_python(message.data)
        return value

    def close(self) -> None:
        self.subscription.close()
