"""wshub's asyncio client: requests with replies matched by ``id``, reconnect and resume.

>>> async with Client("ws://127.0.0.1:8000", user="alice") as c:   # doctest: +SKIP
...     await c.publish("chat:lobby", {"text": "hi"})
...     async for msg in c.subscribe("chat:lobby"):
...         print(msg.sender, msg.data)

The link (:mod:`wshub.client.link`) reconnects when the server's close code says to, asks the
application for a new token when it expired, and stops, saying why (:class:`Stopped`), when
it must not come back; the position per channel (:mod:`wshub.client.channels`) makes a
reconnect resume where it left. When the server answers ``recovered: false`` (history
expired, or the server lost it), the subscription's ``on_gap`` callback says so, and with
``refetch`` the subscription fetches what the history still has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, overload

from wshub.client.channels import END, Channel, Subscription
from wshub.client.frames import Direct, FrameDict, Gap, Message, Stopped, message_of
from wshub.client.link import Link
from wshub.client.typed import ModelSubscription

__all__ = ["Client"]

T = TypeVar("T")


class Client(Link):
    """A wshub connection that survives reconnects. Use as ``async with Client(...) as c``.

    See :class:`~wshub.client.link.Link` for the options: ``token`` (a string or a token
    function), ``auth``, ``user``, ``subscription_token``, ``reconnect``, backoff,
    ``heartbeat`` and the callbacks.
    """

    @property
    def user(self) -> str:
        return str(self.welcome.get("user", ""))

    @property
    def session(self) -> str:
        return str(self.welcome.get("session", ""))

    async def wait_stopped(self) -> Stopped | None:
        """Wait until the link is gone for good: :attr:`stopped`, or None after :meth:`close`."""
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._runner)
        return self.stopped

    def backoff(self, attempt: int) -> float:
        """Seconds before reconnect attempt ``attempt`` (see :class:`~.policy.Backoff`)."""
        return self.backoff_policy.delay(attempt)

    async def join(self, channel: str, *, meta: Any = None) -> FrameDict:
        """Join a channel (again, with the last position seen, if already joined), with the
        subscription token ``subscription_token(channel)`` gives, if there is that function."""
        ch = self._channels.get(channel)
        fresh = ch is None
        if ch is None:
            ch = self._channels[channel] = Channel(meta=meta)
        elif meta is not None:
            ch.meta = meta
        frame = ch.join_frame(channel)
        try:
            token = await self.grants.token_for(channel)
            if token is not None:
                frame["token"] = token
            return await self._request(frame)
        except BaseException:
            self.grants.forget(channel)
            if fresh and not ch.queues:
                self._channels.pop(channel, None)
            raise

    @property
    def channels(self) -> list[str]:
        """The channels this client is in: those it joined, and those the server joined
        it to (``subscribed``), until it leaves them or the server takes it out."""
        return list(self._channels)

    async def leave(self, channel: str) -> None:
        self.grants.forget(channel)
        ch = self._channels.pop(channel, None)
        if ch is not None:
            for queue in ch.queues:
                queue.put_nowait(END)
        await self._request({"type": "leave", "channel": channel})

    async def publish(self, channel: str, data: Any) -> int:
        """Publish to a channel; returns the message's offset."""
        reply = await self._request({"type": "publish", "channel": channel, "data": data})
        return int(reply["offset"])

    async def send(self, to: str, data: Any) -> None:
        """Send a direct message to every connection of user ``to``."""
        await self._request({"type": "send", "to": to, "data": data})

    async def presence(self, channel: str) -> list[FrameDict]:
        reply = await self._request({"type": "presence", "channel": channel})
        members: list[FrameDict] = reply["members"]
        return members

    async def history(
        self, channel: str, *, since: tuple[int, str] | None = None, limit: int = 100
    ) -> tuple[str, list[Message]]:
        """The channel's epoch and a page of its history, oldest first."""
        frame: FrameDict = {"type": "history", "channel": channel, "limit": limit}
        if since is not None:
            frame["since"] = {"offset": since[0], "epoch": since[1]}
        reply = await self._request(frame)
        return reply["epoch"], [message_of(m) for m in reply["messages"]]

    async def ping(self) -> None:
        await self._request({"type": "ping"})

    # --- streams ---------------------------------------------------------------------------

    @overload
    def subscribe(
        self,
        channel: str,
        *,
        meta: Any = None,
        on_gap: Callable[[Gap], object] | None = None,
        refetch: bool = False,
    ) -> Subscription: ...

    @overload
    def subscribe(
        self,
        channel: str,
        *,
        model: type[T],
        meta: Any = None,
        on_gap: Callable[[Gap], object] | None = None,
        refetch: bool = False,
    ) -> ModelSubscription[T]: ...

    def subscribe(
        self,
        channel: str,
        *,
        model: type[T] | None = None,
        meta: Any = None,
        on_gap: Callable[[Gap], object] | None = None,
        refetch: bool = False,
    ) -> Subscription | ModelSubscription[T]:
        """Follow ``channel``: iterate the result to get its messages, each once, in order,
        across reconnects. The channel is joined on the first iteration, if it is not yet.

        Messages are kept from the moment this is called, so nothing that arrives before the
        first iteration is lost. ``on_gap`` is called when a resume was refused
        (``recovered: false``): the messages between the two positions of the :class:`Gap`
        will not come by themselves. With ``refetch``, the subscription then fetches the
        channel's history and yields what the server still has of them, in order, before
        the messages that came after. With ``model``, it yields each message's ``data`` as
        an instance of it instead (:mod:`wshub.client.typed`).
        """
        ch = self._channels.get(channel)
        joined = ch is not None
        if ch is None:
            ch = self._channels[channel] = Channel(meta=meta)
        subscription = Subscription(self, channel, ch, meta, on_gap, joined, refetch)
        return subscription if model is None else ModelSubscription(subscription, model)

    async def directs(self) -> AsyncIterator[Direct]:
        """Yield the direct messages to this client's user; raise :class:`Stopped` when the
        server stopped the client."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._directs.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is END:
                    if self.stopped is not None and self.stopped.code != 1000:
                        raise self.stopped
                    return
                yield item
        finally:
            self._directs.remove(queue)
