"""wshub's asyncio client: requests with replies matched by ``id``, reconnect and resume.

>>> async with Client("ws://127.0.0.1:8000", user="alice") as c:   # doctest: +SKIP
...     await c.publish("chat:lobby", {"text": "hi"})
...     async for msg in c.subscribe("chat:lobby"):
...         print(msg.sender, msg.data)

What it keeps across reconnects is a position per joined channel: the offset and epoch of
the last message it handed out. After a reconnect it joins every channel again with that
position as ``since``, so the server replays what was missed, and it drops any message at or
below the position, so nothing is handed out twice. When the server answers
``recovered: false`` (history expired, or the server lost it), the subscription's ``on_gap``
callback says so: the application refetches what it needs, for example with :meth:`history`.

Dead links (a proxy or a NAT that silently dropped the connection) are found with the
protocol's ``ping`` at the server's ``welcome.heartbeat`` interval: an unanswered ping within
one more interval aborts the link, and the client reconnects with exponential backoff and
jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

__all__ = [
    "Client",
    "ConnectionLost",
    "Direct",
    "Gap",
    "MemberEvent",
    "Message",
    "Refused",
    "ServerError",
    "State",
    "Subscription",
    "ws_url",
]

log = logging.getLogger("wshub.client")

State = Literal["connecting", "open", "reconnecting", "closed"]
Frame = dict[str, Any]

_END: Final = object()
"""Put on a subscription's queue when the client closes, to end its iteration."""


class ServerError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ConnectionError):
    """The link dropped before the reply came: the request may or may not have been served."""


class Refused(ConnectionError):
    """The server refused the handshake with an HTTP status (401, 403, 503, ...)."""

    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status
        self.retry_after = retry_after


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
class Gap:
    """A resume the server could not serve: messages between the two positions are lost."""

    channel: str
    last_offset: int
    last_epoch: str
    offset: int
    epoch: str


@dataclass(slots=True)
class _Channel:
    """A joined channel: what to join it again with, and where this client is in it."""

    meta: Any = None
    offset: int | None = None
    epoch: str | None = None
    queues: list[asyncio.Queue[Any]] = field(default_factory=list)
    on_gap: list[Callable[[Gap], object]] = field(default_factory=list)
    resuming: bool = False


def ws_url(url: str, user: str | None = None) -> str:
    """``http://host:8000`` or ``ws://host:8000`` as the protocol's ``ws://host:8000/ws``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme or "ws")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    query = parts.query
    if user is not None:
        query = "&".join(q for q in (query, urlencode({"user": user})) if q)
    return urlunsplit((scheme, parts.netloc, path, query, ""))


class Client:
    """A wshub connection that survives reconnects. Use as ``async with Client(...) as c``.

    ``token`` is sent as ``Authorization: Bearer``; ``user`` picks the name in open mode.
    ``heartbeat`` overrides the ping interval the server suggests (0 turns pings off).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        user: str | None = None,
        reconnect: bool = True,
        backoff_min: float = 0.25,
        backoff_max: float = 10.0,
        request_timeout: float = 10.0,
        heartbeat: float | None = None,
        on_state: Callable[[State], object] | None = None,
        on_member: Callable[[MemberEvent], object] | None = None,
    ) -> None:
        self.url = ws_url(url, user)
        self.token = token
        self.reconnect = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.request_timeout = request_timeout
        self.heartbeat = heartbeat
        self.on_state = on_state
        self.on_member = on_member
        self.state: State = "closed"
        self.welcome: Frame = {}
        self.reconnects = 0
        """How many times the link was re-established after a drop."""
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._channels: dict[str, _Channel] = {}
        self._directs: list[asyncio.Queue[Any]] = []
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def user(self) -> str:
        return str(self.welcome.get("user", ""))

    @property
    def session(self) -> str:
        return str(self.welcome.get("session", ""))

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect once; raise :class:`Refused` or ``OSError`` if that fails.

        Only a link that was up is re-established automatically: a first failure is more
        likely a wrong address or token than a passing outage.
        """
        self._closing = False
        self._set_state("connecting")
        ws, reader = await self._open()
        self._runner = asyncio.create_task(self._run(ws, reader))

    async def close(self) -> None:
        """Close the link, stop reconnecting and end every subscription."""
        self._closing = True
        runner, self._runner = self._runner, None
        if self._ws is not None:
            await self._ws.close()
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._fail_pending(ConnectionLost("client closed"))
        for queue in self._all_queues():
            queue.put_nowait(_END)
        self._set_state("closed")

    async def _open(self) -> tuple[ClientConnection, asyncio.Task[None]]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await websockets.connect(
                self.url,
                additional_headers=headers,
                ping_interval=None,  # the protocol's ping does this, at the server's pace
                close_timeout=1,
                max_size=None,
                open_timeout=self.request_timeout,
            )
        except websockets.InvalidStatus as exc:
            response = exc.response
            raise Refused(response.status_code, response.headers.get("Retry-After")) from None
        try:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), self.request_timeout))
            if welcome.get("type") != "welcome":
                raise ConnectionError(f"expected a welcome frame, got {welcome!r}")
        except BaseException:
            await ws.close()
            raise
        self.welcome = welcome
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._rejoin()
        except BaseException:
            reader.cancel()
            await ws.close()
            raise
        self._ready.set()
        self._set_state("open")
        return ws, reader

    async def _run(self, ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        """Supervise the link: heartbeat while it is up, reconnect when it drops."""
        while True:
            beat = asyncio.create_task(self._heartbeat(ws))
            try:
                await reader
            finally:
                beat.cancel()
                self._ready.clear()
                self._ws = None
                self._fail_pending(ConnectionLost("connection lost"))
            if self._closing or not self.reconnect:
                self._set_state("closed")
                for queue in self._all_queues():
                    queue.put_nowait(_END)
                return
            self._set_state("reconnecting")
            ws, reader = await self._reconnect()
            self.reconnects += 1

    async def _reconnect(self) -> tuple[ClientConnection, asyncio.Task[None]]:
        for attempt in itertools.count():
            await asyncio.sleep(self.backoff(attempt))
            try:
                return await self._open()
            except (OSError, TimeoutError, ConnectionError, websockets.WebSocketException) as exc:
                log.info("reconnect attempt %d to %s failed: %s", attempt + 1, self.url, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half of the doubled delay is random.

        The jitter spreads the reconnects of many clients that lost one server at once.
        """
        delay = min(self.backoff_max, self.backoff_min * 2**attempt)
        return random.uniform(delay / 2, delay)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        interval = self.heartbeat if self.heartbeat is not None else self.welcome.get("heartbeat")
        if not interval:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await self._request({"type": "ping"}, timeout=interval, wait=False)
            except (TimeoutError, ConnectionLost):
                log.info("no pong within %.1f s: the link to %s is dead", interval, self.url)
                ws.transport.abort()
                return

    async def _rejoin(self) -> None:
        """Join every channel again, from the last position seen, all at once."""
        joins = []
        for name, ch in self._channels.items():
            frame: Frame = {"type": "join", "channel": name}
            if ch.meta is not None:
                frame["meta"] = ch.meta
            if ch.epoch is not None and ch.offset is not None:
                frame["since"] = {"offset": ch.offset, "epoch": ch.epoch}
                ch.resuming = True
            joins.append(self._request(frame, wait=False))
        for reply in await asyncio.gather(*joins, return_exceptions=True):
            if isinstance(reply, ServerError):
                log.warning("rejoin refused: %s", reply)
            elif isinstance(reply, BaseException):
                raise reply

    # --- requests --------------------------------------------------------------------------

    async def _request(
        self, frame: Frame, timeout: float | None = None, wait: bool = True
    ) -> Frame:
        """Send a frame with a fresh id and return its reply; raise ServerError on ``error``.

        With ``wait``, a request made while reconnecting waits for the link to come back.
        """
        timeout = self.request_timeout if timeout is None else timeout
        async with asyncio.timeout(timeout):
            if wait:
                await self._ready.wait()
            ws = self._ws
            if ws is None:
                raise ConnectionLost("not connected")
            frame_id = next(self._ids)
            future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._pending[frame_id] = future
            try:
                await ws.send(json.dumps({**frame, "id": frame_id}))
                reply = await future
            except websockets.ConnectionClosed:
                raise ConnectionLost("connection lost") from None
            finally:
                self._pending.pop(frame_id, None)
        if reply.get("type") == "error":
            raise ServerError(reply.get("code", "internal"), reply.get("message", ""))
        return reply

    async def join(self, channel: str, *, meta: Any = None) -> Frame:
        """Join a channel (again, with the last position seen, if already joined)."""
        ch = self._channels.get(channel)
        fresh = ch is None
        if ch is None:
            ch = self._channels[channel] = _Channel(meta=meta)
        elif meta is not None:
            ch.meta = meta
        frame: Frame = {"type": "join", "channel": channel}
        if ch.meta is not None:
            frame["meta"] = ch.meta
        if ch.offset is not None and ch.epoch is not None:
            frame["since"] = {"offset": ch.offset, "epoch": ch.epoch}
        try:
            return await self._request(frame)
        except BaseException:
            if fresh and not ch.queues:
                self._channels.pop(channel, None)
            raise

    async def leave(self, channel: str) -> None:
        ch = self._channels.pop(channel, None)
        if ch is not None:
            for queue in ch.queues:
                queue.put_nowait(_END)
        await self._request({"type": "leave", "channel": channel})

    async def publish(self, channel: str, data: Any) -> int:
        """Publish to a channel; returns the message's offset."""
        reply = await self._request({"type": "publish", "channel": channel, "data": data})
        return int(reply["offset"])

    async def send(self, to: str, data: Any) -> None:
        """Send a direct message to every connection of user ``to``."""
        await self._request({"type": "send", "to": to, "data": data})

    async def presence(self, channel: str) -> list[Frame]:
        reply = await self._request({"type": "presence", "channel": channel})
        members: list[Frame] = reply["members"]
        return members

    async def history(
        self, channel: str, *, since: tuple[int, str] | None = None, limit: int = 100
    ) -> tuple[str, list[Message]]:
        """The channel's epoch and a page of its history, oldest first."""
        frame: Frame = {"type": "history", "channel": channel, "limit": limit}
        if since is not None:
            frame["since"] = {"offset": since[0], "epoch": since[1]}
        reply = await self._request(frame)
        return reply["epoch"], [_message(m) for m in reply["messages"]]

    async def ping(self) -> None:
        await self._request({"type": "ping"})

    # --- streams ---------------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        *,
        meta: Any = None,
        on_gap: Callable[[Gap], object] | None = None,
    ) -> Subscription:
        """Follow ``channel``: iterate the result to get its messages, each once, in order,
        across reconnects. The channel is joined on the first iteration, if it is not yet.

        Messages are kept from the moment this is called, so nothing that arrives before the
        first iteration is lost. ``on_gap`` is called when a resume was refused
        (``recovered: false``): the messages between the two positions of the :class:`Gap`
        will not come.
        """
        ch = self._channels.get(channel)
        joined = ch is not None
        if ch is None:
            ch = self._channels[channel] = _Channel(meta=meta)
        return Subscription(self, channel, ch, meta, on_gap, joined)

    async def directs(self) -> AsyncIterator[Direct]:
        """Yield the direct messages to this client's user."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._directs.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self._directs.remove(queue)

    # --- frames from the server ------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                    self._dispatch(frame)
                except Exception:
                    log.exception("could not handle a frame from %s: %r", self.url, raw[:200])

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "message":
            self._on_message(frame)
            return
        if kind == "joined":
            self._on_joined(frame)
        elif kind == "direct":
            direct = Direct(frame.get("from"), frame.get("data"), frame.get("ts", 0))
            for queue in self._directs:
                queue.put_nowait(direct)
        elif kind in ("member_joined", "member_left") and self.on_member is not None:
            event_kind: Literal["joined", "left"] = "joined" if kind == "member_joined" else "left"
            self.on_member(MemberEvent(event_kind, frame["channel"], frame["user"], frame["meta"]))
        future = self._pending.get(frame.get("id", -1)) if "id" in frame else None
        if future is not None and not future.done():
            future.set_result(frame)
        elif kind == "error":
            log.warning("error from %s: %s %s", self.url, frame.get("code"), frame.get("message"))

    def _on_joined(self, frame: Frame) -> None:
        # Handled here, in the reader, before any replayed message that follows it is read.
        ch = self._channels.get(frame["channel"])
        if ch is None:
            return
        resuming, ch.resuming = ch.resuming, False
        if frame["recovered"]:
            return
        last_offset, last_epoch = ch.offset, ch.epoch
        ch.offset, ch.epoch = frame["offset"], frame["epoch"]
        if resuming and last_offset is not None and last_epoch is not None:
            gap = Gap(frame["channel"], last_offset, last_epoch, frame["offset"], frame["epoch"])
            log.info("resume refused: %s", gap)
            for callback in list(ch.on_gap):
                callback(gap)

    def _on_message(self, frame: Frame) -> None:
        ch = self._channels.get(frame["channel"])
        if ch is None:
            return
        offset, epoch = frame["offset"], frame["epoch"]
        if epoch == ch.epoch and ch.offset is not None and offset <= ch.offset:
            return  # already handed out: a replay overlapping what came live
        ch.offset, ch.epoch = offset, epoch
        message = _message(frame)
        for queue in ch.queues:
            queue.put_nowait(message)

    # --- internals -------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    def _fail_pending(self, exc: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _all_queues(self) -> list[asyncio.Queue[Any]]:
        return [q for ch in self._channels.values() for q in ch.queues] + self._directs


class Subscription:
    """An async iterator of one channel's messages; see :meth:`Client.subscribe`."""

    def __init__(
        self,
        client: Client,
        channel: str,
        state: _Channel,
        meta: Any,
        on_gap: Callable[[Gap], object] | None,
        joined: bool,
    ) -> None:
        self.client = client
        self.channel = channel
        self._state = state
        self._meta = meta
        self._on_gap = on_gap
        self._join_pending = not joined
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        state.queues.append(self._queue)
        if on_gap is not None:
            state.on_gap.append(on_gap)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._join_pending:
            self._join_pending = False
            try:
                await self.client.join(self.channel, meta=self._meta)
            except BaseException:
                self.close()
                raise
        item = await self._queue.get()
        if item is _END:
            self.close()
            raise StopAsyncIteration
        message: Message = item
        return message

    def close(self) -> None:
        """Stop receiving; the channel stays joined (``Client.leave`` leaves it)."""
        with contextlib.suppress(ValueError):
            self._state.queues.remove(self._queue)
        if self._on_gap is not None:
            with contextlib.suppress(ValueError):
                self._state.on_gap.remove(self._on_gap)


def _message(frame: Frame) -> Message:
    return Message(
        frame["channel"],
        frame["offset"],
        frame["epoch"],
        frame.get("from"),
        frame.get("data"),
        frame.get("ts", 0),
    )
