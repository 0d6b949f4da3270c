"""The client's link: one WebSocket at a time, replies matched by ``id``, and what to do when
it closes, as the protocol's close codes say (:mod:`wshub.client.policy`).

Dead links (a proxy or a NAT that silently dropped the connection) are found with the
protocol's ``ping`` at the server's ``welcome.heartbeat`` interval: an unanswered ping within
one more interval aborts the link, and the client reconnects with backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, Self

import websockets
from websockets.asyncio.client import ClientConnection

from wshub.client.channels import END, Channels
from wshub.client.frames import (
    ConnectionLost,
    Direct,
    Frame,
    MemberEvent,
    Refused,
    ServerError,
    Stopped,
    ws_url,
)
from wshub.client.policy import (
    NO_CLOSE_FRAME,
    Action,
    Backoff,
    after_close,
    after_refusal,
    close_code_of_refusal,
)

__all__ = ["Link", "State", "TokenProvider"]

log = logging.getLogger("wshub.client")

State = Literal["connecting", "open", "reconnecting", "closed"]
TokenProvider = Callable[[], Awaitable[str | None]]
"""Asked for a fresh token when the server says the current one expired or is not valid
(4001, 4003, a handshake refused with 401); None means there is none: the client stops."""

_LINK_ERRORS = (OSError, TimeoutError, ConnectionError, websockets.WebSocketException)


class Link:
    """A connection that survives reconnects; :class:`~wshub.client.Client` adds the requests.

    ``token`` is sent as ``Authorization: Bearer``; ``user`` picks the name in open mode.
    ``token_provider`` is an async callable asked for a new token when the server refuses
    the current one. ``heartbeat`` overrides the ping interval the server suggests (0 turns
    pings off). ``on_stop`` is called with :class:`Stopped` when the server stopped the
    client for good; it is also :attr:`stopped`, and what subscriptions raise.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        user: str | None = None,
        token_provider: TokenProvider | None = None,
        reconnect: bool = True,
        backoff_min: float = 0.25,
        backoff_max: float = 10.0,
        request_timeout: float = 10.0,
        heartbeat: float | None = None,
        on_state: Callable[[State], object] | None = None,
        on_member: Callable[[MemberEvent], object] | None = None,
        on_stop: Callable[[Stopped], object] | None = None,
    ) -> None:
        self.url = ws_url(url, user)
        self.token = token
        self.token_provider = token_provider
        self.reconnect = reconnect
        self.backoff_policy = Backoff(backoff_min, backoff_max)
        self.request_timeout = request_timeout
        self.heartbeat = heartbeat
        self.on_state = on_state
        self.on_member = on_member
        self.on_stop = on_stop
        self.state: State = "closed"
        self.welcome: Frame = {}
        self.stopped: Stopped | None = None
        """Why the server stopped this client, once it did; None while it runs."""
        self.reconnects = 0
        """How many times the link was re-established after a drop."""
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._sizes: dict[int, int] = {}
        """The length of each pending request's frame, to match an id-less ``too_large``."""
        self._channels = Channels()
        self._directs: list[asyncio.Queue[Any]] = []
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
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
        likely a wrong address or token than a passing outage. A token refused with 401 is
        the exception when there is a ``token_provider``: it is asked once for another.
        """
        self._closing = False
        self.stopped = None
        self._set_state("connecting")
        try:
            try:
                ws, reader = await self._open()
            except Refused as exc:
                if exc.status != 401 or not await self._renew_token():
                    raise
                ws, reader = await self._open()
        except BaseException:
            self._set_state("closed")
            raise
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
        self._end(None)

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
            reason = response.body.decode("utf-8", "replace").strip() if response.body else ""
            raise Refused(
                response.status_code, response.headers.get("Retry-After"), reason
            ) from None
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
        """Supervise the link: heartbeat while it is up; when it drops, do what its close
        code says (:mod:`wshub.client.policy`)."""
        while True:
            beat = asyncio.create_task(self._heartbeat(ws))
            try:
                await reader
            finally:
                beat.cancel()
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
            self._fail_pending(ConnectionLost("connection lost"))
            if action is Action.NEW_TOKEN and not await self._renew_token():
                self._end(Stopped(code, f"{reason or 'token refused'}; no new token"))
                return
            self._set_state("reconnecting")
            link = await self._reconnect()
            if isinstance(link, Stopped):
                self._end(link)
                return
            ws, reader = link
            self.reconnects += 1

    async def _reconnect(self) -> tuple[ClientConnection, asyncio.Task[None]] | Stopped:
        retry_after = 0.0
        for attempt in itertools.count():
            await asyncio.sleep(self.backoff_policy.delay(attempt, retry_after))
            retry_after = 0.0
            try:
                return await self._open()
            except Refused as exc:
                log.info("reconnect attempt %d to %s refused: %s", attempt + 1, self.url, exc)
                action = after_refusal(exc.status)
                if action is Action.STOP:
                    return Stopped(close_code_of_refusal(exc.status), exc.reason)
                if action is Action.NEW_TOKEN and not await self._renew_token():
                    return Stopped(4001, f"{exc.reason or 'token refused'}; no new token")
                retry_after = exc.retry_after_seconds
            except _LINK_ERRORS as exc:
                log.info("reconnect attempt %d to %s failed: %s", attempt + 1, self.url, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _renew_token(self) -> bool:
        """Ask the application for a new token; whether it gave one."""
        if self.token_provider is None:
            return False
        token = await self.token_provider()
        if not token:
            return False
        self.token = token
        return True

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
            frame = ch.join_frame(name)
            ch.resuming = "since" in frame
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
        if self.stopped is not None:
            raise self.stopped
        timeout = self.request_timeout if timeout is None else timeout
        async with asyncio.timeout(timeout):
            if wait:
                await self._ready.wait()
            ws = self._ws
            if ws is None:
                raise self.stopped or ConnectionLost("not connected")
            frame_id = next(self._ids)
            future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._pending[frame_id] = future
            text = json.dumps({**frame, "id": frame_id})
            self._sizes[frame_id] = len(text)
            try:
                await ws.send(text)
                reply = await future
            except websockets.ConnectionClosed:
                raise ConnectionLost("connection lost") from None
            finally:
                self._pending.pop(frame_id, None)
                self._sizes.pop(frame_id, None)
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

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "message":
            self._channels.on_message(frame)
            return
        if kind == "joined":
            self._channels.on_joined(frame)
        elif kind == "direct":
            direct = Direct(frame.get("from"), frame.get("data"), frame.get("ts", 0))
            for queue in self._directs:
                queue.put_nowait(direct)
        elif kind in ("member_joined", "member_left") and self.on_member is not None:
            event_kind: Literal["joined", "left"] = "joined" if kind == "member_joined" else "left"
            self.on_member(MemberEvent(event_kind, frame["channel"], frame["user"], frame["meta"]))
        future = self._pending.get(frame.get("id", -1)) if "id" in frame else None
        if future is None and kind == "error" and frame.get("code") == "too_large":
            future = self._largest_pending()
        if future is not None and not future.done():
            future.set_result(frame)
        elif kind == "error":
            log.warning("error from %s: %s %s", self.url, frame.get("code"), frame.get("message"))

    # --- internals -------------------------------------------------------------------------

    def _largest_pending(self) -> asyncio.Future[Frame] | None:
        """The request a ``too_large`` without an id answers: the server did not read a frame
        over its limit, so it could not copy the id; the largest frame waiting is the one."""
        if not self._sizes:
            return None
        return self._pending.get(max(self._sizes, key=self._sizes.__getitem__))

    def _end(self, stopped: Stopped | None) -> None:
        """The link is gone for good: fail what waits, end every stream, say why."""
        if self.state == "closed" and (stopped is None or self.stopped is not None):
            return
        if stopped is not None:
            self.stopped = stopped
            log.log(logging.INFO if stopped.code == 1000 else logging.WARNING, "%s", stopped)
        self._fail_pending(stopped or ConnectionLost("client closed"))
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

    def _fail_pending(self, exc: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _all_queues(self) -> list[asyncio.Queue[Any]]:
        return [q for ch in self._channels.values() for q in ch.queues] + self._directs
