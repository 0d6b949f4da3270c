"""A connection's transport when it is a Server-Sent Events stream: frames become events.

:class:`SseSocket` is a :class:`~wshub.core.connection.Socket`, so an SSE client is an ordinary
connection of the hub: the same bounded queue, slow-consumer rule, limits and drain as a
WebSocket one. Its writer hands each frame to :meth:`SseSocket.events`, which the HTTP response
iterates; the hand-off holds one event, so while the client does not read (the response's send
waits on the socket) the writer waits too, and the connection's own queue fills until it is a
slow consumer.

Each event is one frame: ``event:`` its ``type``, ``data:`` its JSON on one line, and for
``message``, ``joined``, ``subscribed``, ``unsubscribed`` and ``left`` an ``id:`` naming the
stream's position in every channel it is in (:mod:`wshub.protocol.event_id`). That id is what a
reconnecting ``EventSource`` sends back as ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import msgspec

from wshub.core.connection import FastPath
from wshub.protocol.event_id import Position, format_event_id

__all__ = ["ABORT", "SseSocket", "encode_event"]

ABORT = "wshub.abort"
"""ASGI extension offered by wshub's uvicorn HTTP protocol in each HTTP scope: drop the TCP
connection now. Closing would wait for unread bytes to flush, which a client that stopped
reading never lets happen."""

log = logging.getLogger("wshub.transport.sse")

_POSITIONED = frozenset({"message", "joined", "subscribed", "unsubscribed", "left"})
"""The frames that move the stream's position, and so carry an ``id``."""


class _Head(msgspec.Struct, forbid_unknown_fields=False):
    """What the stream reads of a frame: its type, and where it is in its channel."""

    type: str = ""
    channel: str | None = None
    offset: int | None = None
    epoch: str | None = None
    recovered: bool | None = None


_heads = msgspec.json.Decoder(_Head)
_encoder = msgspec.json.Encoder()


def encode_event(event: str, data: str, event_id: str | None = None) -> bytes:
    """One event in the ``text/event-stream`` format, ``data`` on a single line."""
    if "\n" in data or "\r" in data:
        # JSON published as raw bytes may hold line breaks between its tokens (never inside a
        # string, where they are escaped): re-encoded, it is one line.
        data = _encoder.encode(msgspec.json.decode(data)).decode()
    head = f"event: {event}\n" if event_id is None else f"event: {event}\nid: {event_id}\n"
    return f"{head}data: {data}\n\n".encode()


class SseSocket:
    """The stream of one SSE connection, and its position in every channel.

    ``resume`` is the position the client came back with (its ``Last-Event-ID``): a channel
    rejoined with ``recovered: true`` keeps that position until the missed messages arrive.
    ``abort`` cuts the HTTP connection at once, for a client that does not read.
    """

    fast: FastPath | None = None

    __slots__ = ("_abort", "_ended", "_handoff", "_positions", "_resume")

    def __init__(
        self, resume: dict[str, Position] | None = None, abort: Callable[[], None] | None = None
    ) -> None:
        self._resume = resume or {}
        self._positions: dict[str, Position] = {}
        self._abort = abort
        self._handoff: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._ended = False

    @property
    def positions(self) -> dict[str, Position]:
        """Where the stream is, as written so far."""
        return dict(self._positions)

    def event_for(self, text: str) -> bytes:
        """The event for one server frame, moving the stream's position."""
        try:
            head = _heads.decode(text)
        except msgspec.DecodeError:  # every frame is the server's own JSON; be safe anyway
            return encode_event("message", text)
        kind = head.type
        if kind not in _POSITIONED or head.channel is None:
            return encode_event(kind, text)
        channel = head.channel
        if kind in ("unsubscribed", "left"):
            self._positions.pop(channel, None)
        elif head.offset is not None and head.epoch is not None:
            resumed = self._resume.pop(channel, None)
            if kind == "joined" and head.recovered and resumed is not None:
                self._positions[channel] = resumed  # the missed messages follow
            else:
                self._positions[channel] = (head.offset, head.epoch)
        return encode_event(kind, text, format_event_id(self._positions))

    async def send_text(self, text: str) -> None:
        if self._ended:
            return
        await self._handoff.put(self.event_for(text))

    async def close(self, code: int, reason: str) -> None:
        """End the stream after the events already handed over."""
        if not self._ended:
            self._ended = True
            await self._handoff.put(None)

    def drop(self, code: int, reason: str) -> None:
        """End the stream now, and the HTTP connection with it: the client is not reading."""
        self._ended = True
        with contextlib.suppress(asyncio.QueueEmpty):
            self._handoff.get_nowait()
        self._handoff.put_nowait(None)
        if self._abort is not None:
            self._abort()

    async def events(self) -> AsyncIterator[bytes]:
        """The events to write, until the connection closes."""
        while True:
            event = await self._handoff.get()
            if event is None:
                return
            yield event
