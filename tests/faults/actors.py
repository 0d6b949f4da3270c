"""Clients that keep the books: a publisher that knows what was acknowledged, subscribers
that check the order of what they receive and resume the way docs/protocol.md says a client does.
Both are on the `websockets` library, not on wshub's own client."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

REPLY_BOUND = 10.0
"""No frame with an id may wait longer than this for its reply (a few broker timeouts)."""


class Subscriber:
    """Joins a channel and stays in it: reconnects (its own node first) and rejoins with
    ``since`` after any close, as a client is told to."""

    def __init__(self, user: str, urls: list[str], channel: str) -> None:
        self.user = user
        self.urls = urls
        self.channel = channel
        self.received: list[int] = []
        self.seen: set[int] = set()
        self.position: tuple[str, int] | None = None
        self.violations: list[str] = []
        self.told = 0
        """Rejoins answered ``recovered: false``: the subscriber was told it lost messages."""
        self.closes: list[int | None] = []
        """Close codes the server sent; None for a connection that ended without one."""
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.joined = asyncio.Event()
        self.node = ""
        self._asked_since = False
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        attempt = 0
        while not self._stop:
            url = self.urls[min(attempt, len(self.urls) - 1)]
            try:
                async with websockets.connect(
                    f"{url}/ws?user={self.user}", open_timeout=3, close_timeout=1
                ) as ws:
                    attempt = 0
                    await self._session(ws)
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd is not None else None)
                attempt = 0
            except (OSError, InvalidStatus, TimeoutError):
                attempt += 1  # this node is gone or not ready: the next one
            await asyncio.sleep(0.2)

    async def _session(self, ws: ClientConnection) -> None:
        welcome = json.loads(await ws.recv())
        self.joined.clear()
        self.node = welcome["server"]["node"]
        await self._join(ws)
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "message":
                self._message(frame)
            elif kind == "joined":
                self._joined(frame)
            elif kind in ("member_joined", "member_left"):
                self.events.append((time.monotonic(), frame))
            elif kind == "error" and frame.get("id") == "join":
                await asyncio.sleep(0.3)  # unavailable or timeout: try again
                await self._join(ws)

    async def _join(self, ws: ClientConnection) -> None:
        join: dict[str, Any] = {"type": "join", "channel": self.channel, "id": "join"}
        join["meta"] = {"user": self.user}
        if self.position is not None:
            join["since"] = {"epoch": self.position[0], "offset": self.position[1]}
        self._asked_since = self.position is not None
        await ws.send(json.dumps(join))

    def _joined(self, frame: dict[str, Any]) -> None:
        if self._asked_since and not frame["recovered"]:
            self.told += 1
            self.position = (frame["epoch"], frame["offset"])
        elif not self._asked_since:
            self.position = (frame["epoch"], frame["offset"])
        self.joined.set()

    def _message(self, frame: dict[str, Any]) -> None:
        epoch, offset = frame["epoch"], frame["offset"]
        if self.position is not None:
            last_epoch, last = self.position
            if epoch == last_epoch and offset != last + 1:
                self.violations.append(f"{self.user}: offset {offset} after {last}")
            elif epoch != last_epoch and offset != 1:
                self.violations.append(f"{self.user}: new epoch starts at {offset}")
        self.position = (epoch, offset)
        self.received.append(frame["data"]["i"])
        self.seen.add(frame["data"]["i"])


class Publisher:
    """Publishes ``{"i": n}`` at a steady rate, one request at a time, and records every
    reply: what was acknowledged, and which errors came."""

    def __init__(self, url: str, channel: str, rate: float = 25) -> None:
        self.url = url
        self.channel = channel
        self.every = 1 / rate
        self.acked: dict[int, float] = {}
        """Acknowledged ``i`` -> when."""
        self.errors: collections.Counter[str] = collections.Counter()
        self.refused: set[int] = set()
        """Publications answered ``unavailable``: none of them may ever be delivered."""
        self.unanswered = 0
        self.slowest = 0.0
        self.sent = 0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Publisher:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task

    def acked_after(self, moment: float) -> list[int]:
        return [i for i, t in self.acked.items() if t > moment]

    async def _run(self) -> None:
        while not self._stop:
            try:
                async with websockets.connect(
                    f"{self.url}/ws?user=publisher", open_timeout=3, close_timeout=1
                ) as ws:
                    await ws.recv()  # welcome
                    while not self._stop:
                        await self._publish(ws)
                        await asyncio.sleep(self.every)
            except (ConnectionClosed, OSError, InvalidStatus, TimeoutError):
                await asyncio.sleep(0.2)

    async def _publish(self, ws: ClientConnection) -> None:
        self.sent += 1
        i = self.sent
        frame = {"type": "publish", "channel": self.channel, "data": {"i": i}, "id": i}
        started = time.monotonic()
        await ws.send(json.dumps(frame))
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), REPLY_BOUND)
            except TimeoutError:
                self.unanswered += 1
                return
            reply = json.loads(raw)
            if reply.get("id") == i:
                break
        self.slowest = max(self.slowest, time.monotonic() - started)
        if reply["type"] == "ack":
            self.acked[i] = time.monotonic()
        else:
            self.errors[reply.get("code", reply["type"])] += 1
            if reply.get("code") == "unavailable":
                self.refused.add(i)
