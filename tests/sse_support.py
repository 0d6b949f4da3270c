"""A Server-Sent Events reader on httpx (not wshub's code), for the tests of ``GET /sse``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    """One event as a browser's ``EventSource`` would see it."""

    event: str
    data: dict[str, Any]
    id: str | None
    """The ``id:`` of this event; None when it had none (the last id then stays)."""
    data_lines: int = 1


@dataclass
class Stream:
    """An open ``text/event-stream`` response."""

    response: httpx.Response
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)
    last_id: str | None = None

    async def next(self, timeout: float = 5.0) -> Event:
        """The next event (comments are kept in :attr:`comments`)."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Event:
        kind, event_id, count = "message", None, 0
        data: list[str] = []
        async for line in self.lines:
            if line == "":
                if data:
                    if event_id is not None:
                        self.last_id = event_id
                    return Event(kind, json.loads("\n".join(data)), event_id, count)
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                self.comments.append(value)
            elif name == "event":
                kind = value
            elif name == "data":
                data.append(value)
                count += 1
            elif name == "id":
                event_id = value
        raise EOFError("the stream ended")

    async def until(self, kind: str, timeout: float = 5.0) -> Event:
        """The next event of type ``kind``, skipping others."""
        while True:
            event = await self.next(timeout)
            if event.event == kind:
                return event

    async def messages(self, count: int, timeout: float = 10.0) -> list[Event]:
        return [await self.until("message", timeout) for _ in range(count)]

    async def ended(self, timeout: float = 10.0) -> bool:
        """Whether the stream ends (cleanly) within ``timeout``, skipping what comes first."""
        with contextlib.suppress(EOFError):
            while True:
                await self.next(timeout)
        return True


@contextlib.asynccontextmanager
async def sse(
    base: str, *channels: str, headers: dict[str, str] | None = None, **query: str
) -> AsyncIterator[Stream]:
    """Open ``GET /sse`` and check it was accepted as an event stream."""
    params: list[tuple[str, str | int | float | bool | None]] = [("channel", c) for c in channels]
    params += query.items()
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", f"{base}/sse", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200, (response.status_code, await response.aread())
        yield Stream(response, response.aiter_lines())


async def refused(
    base: str, *channels: str, headers: dict[str, str] | None = None, **query: str
) -> httpx.Response:
    """``GET /sse`` that must be refused before the stream: its response, read whole."""
    params: list[tuple[str, str | int | float | bool | None]] = [("channel", c) for c in channels]
    params += query.items()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base}/sse", params=params, headers=headers)
    assert response.status_code != 200, response.text
    return response
