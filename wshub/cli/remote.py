"""The work of ``wshub listen`` and ``wshub publish``, and their one-line error messages.

Every way these can fail ends in :class:`Failed`: a sentence for a person, and the exit code
(1: the server or the network said no; 2: the command line itself is wrong). No traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import websockets

from wshub.client import Client, Gap, Refused, ServerError, Stopped, ws_url

__all__ = ["Failed", "listen", "parse_data", "publish"]

T = TypeVar("T")


class Failed(Exception):
    """What to print (one line) and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def quiet_client_log() -> None:
    """The commands say what happened themselves; the client's own warnings would repeat it."""
    logging.getLogger("wshub.client").addHandler(logging.NullHandler())
    logging.getLogger("wshub.client").propagate = False


def check_url(url: str) -> None:
    try:
        ws_url(url)
    except ValueError as exc:
        raise Failed(f"--url: {exc} (for example ws://127.0.0.1:8000)", 2) from None


def parse_data(data: str, text: bool) -> Any:
    """DATA as JSON, or as a string with ``--text``; Failed if it is not JSON."""
    if text:
        return data
    try:
        return json.loads(data)
    except ValueError as exc:
        raise Failed(
            f"DATA is not valid JSON ({exc}); use --text to send it as a string", 2
        ) from None


def run(url: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` and turn what it can raise into :class:`Failed`."""
    quiet_client_log()
    try:
        return asyncio.run(work())
    except Stopped as exc:
        raise Failed(
            f"the server stopped this client: {exc.reason or 'no reason'} (close code {exc.code})"
        ) from None
    except Refused as exc:
        raise Failed(f"cannot connect to {url}: {exc}") from None
    except TimeoutError:
        raise Failed(f"no answer from {url} within 10 s") from None
    except (OSError, websockets.WebSocketException) as exc:
        raise Failed(f"cannot connect to {url}: {exc or type(exc).__name__}") from None


def listen(url: str, channel: str, token: str | None, user: str | None, count: int) -> None:
    """Print a channel's messages as JSON lines until ``count`` (0: until stopped)."""
    check_url(url)

    def gap(g: Gap) -> None:
        lost = "the server lost its history" if g.epoch != g.last_epoch else "history expired"
        print(
            f"resume refused ({lost}): messages after offset {g.last_offset} could not be "
            "replayed; refetching what the channel's history still has",
            file=sys.stderr,
            flush=True,
        )

    async def follow() -> None:
        async with Client(url, token=token, user=user) as client:
            seen = 0
            try:
                async for msg in client.subscribe(channel, on_gap=gap, refetch=True):
                    line = {
                        "channel": msg.channel,
                        "offset": msg.offset,
                        "epoch": msg.epoch,
                        "from": msg.sender,
                        "data": msg.data,
                        "ts": msg.ts,
                    }
                    sys.stdout.write(json.dumps(line) + "\n")
                    sys.stdout.flush()
                    seen += 1
                    if count and seen >= count:
                        return
            except ServerError as exc:
                raise Failed(f"cannot follow {channel}: {exc}") from None
            if client.stopped is not None:
                print(f"the server closed the connection: {client.stopped}", file=sys.stderr)

    run(url, follow)


def publish(url: str, channel: str, payload: Any, token: str | None, user: str | None) -> int:
    """Publish one message; its offset."""
    check_url(url)

    async def once() -> int:
        async with Client(url, token=token, user=user, reconnect=False) as client:
            try:
                return await client.publish(channel, payload)
            except ServerError as exc:
                raise Failed(f"refused: {exc}") from None

    return run(url, once)
