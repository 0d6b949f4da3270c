"""The client's link: one WebSocket at a time, and what to do when it closes, as the
protocol's close codes say (:mod:`wshub.client.policy`).

Its parts: opening a WebSocket and sending the token in the ``auth`` frame
(:mod:`~wshub.client.dial`), replies matched by ``id`` (:mod:`~wshub.client.replies`), dead
links found with the protocol's ``ping`` at the server's ``welcome.heartbeat`` interval
(:mod:`~wshub.client.heartbeat`), the attempts with backoff and jitter after a drop
(:mod:`~wshub.client.reconnect`), the token's refresh before it ends
(:mod:`~wshub.client.refresh`) and the channels' subscription tokens
(:mod:`~wshub.client.grants`).

The options of :class:`Link` (and so of :class:`~wshub.client.Client`): ``token`` is a JWT,
or an async function returning one (None: there is none, stop); the function is called to
connect, to ``refresh`` the token before it ends, and after the server refused one (4001,
4003, HTTP 401). The token is sent in the ``auth`` first frame, or with ``auth="header"`` as
``Authorization: Bearer``. ``user`` picks the name in open mode. ``token_provider``
(deprecated) is the function next to a string ``token``. ``subscription_token(channel)``
gives the subscription token to join a channel with (None: without one); it is called on
every join and before that token ends. ``on_subscribed(channel)`` and
``on_unsubscribed(event)`` tell of the channels the server joined the client to or took it
out of; ``on_refresh(expires)`` and ``on_refresh_error(exc)`` of each refresh.
``heartbeat`` overrides the ping interval the server suggests (0 turns pings off).
``on_stop`` is called with :class:`Stopped` when the server stopped the client for good; it
is also :attr:`Link.stopped`, and what subscriptions raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

import websockets
from websockets.asyncio.client import ClientConnection

from wshub.client import heartbeat, resume
from wshub.client.channels import END, Channels
from wshub.client.dial import AuthMode, dial
from wshub.client.frames import (
    ConnectionLost,
    Direct,
    FrameDict,
    MemberEvent,
    Refused,
    ServerError,
    Stopped,
    Unsubscribed,
    ws_url,
)
from wshub.client.grants import Grants
from wshub.client.policy import NO_CLOSE_FRAME, Action, Backoff, after_close
from wshub.client.reconnect import reconnect
from wshub.client.refresh import Tokens
from wshub.client.replies import Replies
from wshub.client.tokens import SubscriptionTokenFunction, TokenFunction, TokenSource

__all__ = ["Link", "State", "TokenProvider"]

log = logging.getLogger("wshub.client")

State = Literal["connecting", "open", "reconnecting", "closed"]
TokenProvider = TokenFunction
"""The type of ``token_provider`` (deprecated: pass the function as ``token``)."""


class Link:
    """A connection that survives reconnects; :class:`~wshub.client.Client` adds the requests.
    Its options are in the module's documentation."""

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        user: str | None = None,
        token_provider: TokenProvider | None = None,
        auth: AuthMode = "frame",
        subscription_token: SubscriptionTokenFunction | None = None,
        reconnect: bool = True,
        backoff_min: float = 0.25,
        backoff_max: float = 10.0,
        request_timeout: float = 10.0,
        heartbeat: float | None = None,
        on_state: Callable[[State], object] | None = None,
        on_member: Callable[[MemberEvent], object] | None = None,
        on_stop: Callable[[Stopped], object] | None = None,
        on_subscribed: Callable[[str], object] | None = None,
        on_unsubscribed: Callable[[Unsubscribed], object] | None = None,
        on_refresh: Callable[[float | None], object] | None = None,
        on_refresh_error: Callable[[Exception], object] | None = None,
    ) -> None:
        self.url = ws_url(url, user)
        self.auth: AuthMode = auth
        self.tokens = Tokens(token, token_provider, on_refresh, on_refresh_error)
        self.grants = Grants(subscription_token, self._renew_grant)
        self.on_subscribed = on_subscribed
        self.on_unsubscribed = on_unsubscribed
        self.reconnect = reconnect
        self.backoff_policy = Backoff(backoff_min, backoff_max)
        self.request_timeout = request_timeout
        self.heartbeat = heartbeat
        self.on_state = on_state
        self.on_member = on_member
        self.on_stop = on_stop
        self.state: State = "closed"
        self.welcome: FrameDict = {}
        self.stopped: Stopped | None = None
        """Why the server stopped this client, once it did; None while it runs."""
        self.reconnects = 0
        """How many times the link was re-established after a drop."""
        self._ws: ClientConnection | None = None
        self._replies = Replies()
        self._channels = Channels()
        self._directs: list[asyncio.Queue[Any]] = []
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._fills: set[asyncio.Task[None]] = set()
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
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
        likely a wrong address or token than a passing outage. A refused token is the
        exception when there is a token function: it is asked once for another.
        """
        self._closing = False
        self.stopped = None
        self._set_state("connecting")
        try:
            await self.tokens.first()
            if self.tokens.current is None and self.tokens.function is not None:
                raise Stopped(4003, self.tokens.why_none)
            try:
                ws, reader = await self._open()
            except Refused as exc:
                if exc.status != 401 or self.tokens.function is None:
                    raise
                if not await self.tokens.renew():
                    raise Stopped(exc.code, f"{exc.reason}; {self.tokens.why_none}") from exc
                ws, reader = await self._open()
        except BaseException:
            self._set_state("closed")
            raise
        self._runner = asyncio.create_task(self._run(ws, reader))

    async def close(self) -> None:
        """Close the link, stop reconnecting and end every subscription."""
        self._closing = True
        self.tokens.stop()
        self.grants.forget_all()
        runner, self._runner = self._runner, None
        if self._ws is not None:
            await self._ws.close()
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._end(None)

    async def _open(self) -> tuple[ClientConnection, asyncio.Task[None]]:
        ws, self.welcome = await dial(
            self.url, self.tokens.current, self.request_timeout, self.auth
        )
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            await resume.rejoin(self._channels, self.grants, partial(self._request, wait=False))
        except BaseException:
            reader.cancel()
            await ws.close()
            raise
        self.tokens.watch(self.welcome.get("expires"), partial(self._request, wait=False))
        self._ready.set()
        self._set_state("open")
        return ws, reader

    async def _run(self, ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        """Supervise the link: heartbeat while it is up; when it drops, do what its close
        code says (:mod:`wshub.client.policy`)."""
        while True:
            beat = asyncio.create_task(self._heartbeat(ws))
            try:
                await reader
            finally:
                beat.cancel()
                self.tokens.stop()
                self.grants.forget_all()
                self._ready.clear()
                self._ws = None
            if self._closing:
                self._end(None)
                return
            close = ws.protocol.close_rcvd
            code, reason = (close.code, close.reason) if close else (NO_CLOSE_FRAME, "")
            action = after_close(code)
            if action is Action.RECONNECT and not self.reconnect:
                action = Action.NOTHING
            log.info("link to %s closed (%d %s): %s", self.url, code, reason, action.value)
            if action is Action.STOP or action is Action.NOTHING:
                self._end(Stopped(code, reason))
                return
            self._replies.fail(ConnectionLost("connection lost"))
            if action is Action.NEW_TOKEN and not await self.tokens.renew():
                why = self.tokens.why_none
                self._end(Stopped(code, f"{reason or 'token refused'}; {why}"))
                return
            self._set_state("reconnecting")
            link = await reconnect(self._open, self.backoff_policy, self.tokens, self.url)
            if isinstance(link, Stopped):
                self._end(link)
                return
            ws, reader = link
            self.reconnects += 1

    @property
    def token(self) -> str | None:
        """The connection token the next handshake sends (the last one refreshed)."""
        return self.tokens.current

    async def _renew_grant(self, channel: str, token: str) -> None:
        """Join ``channel`` again with a fresh subscription token, keeping its position."""
        ch = self._channels.get(channel)
        if ch is None:
            return
        ch.renewing += 1
        try:
            await self._request(ch.renewal_frame(channel, token), wait=False)
        except BaseException:
            ch.renewing = max(0, ch.renewing - 1)
            raise

    async def _heartbeat(self, ws: ClientConnection) -> None:
        interval = self.heartbeat if self.heartbeat is not None else self.welcome.get("heartbeat")
        if interval:
            await heartbeat.watch(ws, interval, self._ping, self.url)

    async def _ping(self, timeout: float) -> None:
        await self._request({"type": "ping"}, timeout=timeout, wait=False)

    # --- requests --------------------------------------------------------------------------

    async def _request(
        self, frame: FrameDict, timeout: float | None = None, wait: bool = True
    ) -> FrameDict:
        """Send a frame with a fresh id and return its reply; raise ServerError on ``error``.

        With ``wait``, a request made while reconnecting waits for the link to come back.
        """
        if self.stopped is not None:
            raise self.stopped
        timeout = self.request_timeout if timeout is None else timeout
        async with asyncio.timeout(timeout):
            if wait:
                await self._ready.wait()
            ws = self._ws
            if ws is None:
                raise self.stopped or ConnectionLost("not connected")
            with self._replies.expect(frame) as (text, future):
                try:
                    await ws.send(text)
                    reply = await future
                except websockets.ConnectionClosed:
                    raise ConnectionLost("connection lost") from None
        if reply.get("type") == "error":
            raise ServerError(reply.get("code", "internal"), reply.get("message", ""))
        return reply

    # --- frames from the server ------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                    self._dispatch(frame)
                except Exception:
                    log.exception("could not handle a frame from %s: %r", self.url, raw[:200])

    def _dispatch(self, frame: FrameDict) -> None:
        kind = frame.get("type")
        if kind == "message":
            self._channels.on_message(frame)
            return
        if kind == "joined":
            self._channels.on_joined(frame)
        elif kind == "subscribed":
            self._subscribed(frame)
        elif kind == "unsubscribed":
            self.grants.forget(frame["channel"])
            event = self._channels.on_unsubscribed(frame)
            log.info("unsubscribed from %s: %s", frame["channel"], frame.get("reason"))
            if event is not None and self.on_unsubscribed is not None:
                self.on_unsubscribed(event)
        elif kind == "direct":
            direct = Direct(frame.get("from"), frame.get("data"), frame.get("ts", 0))
            for queue in self._directs:
                queue.put_nowait(direct)
        elif kind in ("member_joined", "member_left") and self.on_member is not None:
            event_kind: Literal["joined", "left"] = "joined" if kind == "member_joined" else "left"
            self.on_member(MemberEvent(event_kind, frame["channel"], frame["user"], frame["meta"]))
        if not self._replies.answer(frame) and kind == "error":
            log.warning("error from %s: %s %s", self.url, frame.get("code"), frame.get("message"))

    def _subscribed(self, frame: FrameDict) -> None:
        name = frame["channel"]
        new = name not in self._channels
        held = self._channels.on_subscribed(frame)
        if held is not None:
            request = partial(self._request, wait=False)
            work = resume.fill(self._channels, name, held, frame["offset"], request)
            self._fills.add(task := asyncio.create_task(work))
            task.add_done_callback(self._fills.discard)
        elif new and self.on_subscribed is not None:
            self.on_subscribed(name)

    # --- internals -------------------------------------------------------------------------

    def _end(self, stopped: Stopped | None) -> None:
        """The link is gone for good: fail what waits, end every stream, say why."""
        if self.state == "closed" and (stopped is None or self.stopped is not None):
            return
        if stopped is not None:
            self.stopped = stopped
            log.log(logging.INFO if stopped.code == 1000 else logging.WARNING, "%s", stopped)
        self._replies.fail(stopped or ConnectionLost("client closed"))
        for queue in self._all_queues():
            queue.put_nowait(END)
        self._set_state("closed")
        if stopped is not None and self.on_stop is not None:
            self.on_stop(stopped)

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    def _all_queues(self) -> list[asyncio.Queue[Any]]:
        return [q for ch in self._channels.values() for q in ch.queues] + self._directs
