"""Shared by the identity tests: tokens, and a raw client that has not been welcomed yet."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import websockets

from tests.support import Client
from wshub.core.tokens import Claims, Signer

SECRET = "a-test-secret-long-enough-for-hs256-and-for-hs512-which-wants-64-bytes"
SIGNER = Signer.from_secret(SECRET)


def token(user: str = "ann", ttl: float = 86400, now: float | None = None, **claims: Any) -> str:
    return SIGNER.sign(Claims(user, ttl=ttl, **claims), now)


def expired(user: str = "ann") -> str:
    return token(user, ttl=1, now=time.time() - 60)


def sub_token(user: str, channel: str, ttl: float = 86400) -> str:
    return SIGNER.sign(Claims(user, channel=channel, ttl=ttl))


@contextlib.asynccontextmanager
async def unidentified(base: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A connection to ``/ws`` with no token: nothing is read from it yet."""
    kwargs.setdefault("close_timeout", 1)
    async with websockets.connect(f"{base}/ws", **kwargs) as ws:
        yield Client(ws)


async def auth(client: Client, jwt: str) -> dict[str, Any]:
    """Send the auth frame; the ``welcome`` that answers it."""
    welcome = await client.request({"type": "auth", "token": jwt})
    assert welcome["type"] == "welcome", welcome
    client.welcome = welcome
    return welcome


async def close_code(client: Client, timeout: float = 10) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        while True:
            await client.recv(timeout=timeout)
    except websockets.ConnectionClosed as exc:
        return None if exc.rcvd is None else exc.rcvd.code


async def error_code(client: Client, frame: dict[str, Any]) -> str:
    reply = await client.request(frame)
    assert reply["type"] == "error", reply
    return str(reply["code"])


async def still_usable(client: Client) -> None:
    assert (await client.request({"type": "ping"}))["type"] == "pong"


def until_past(moment: float) -> float:
    """Seconds from now until ``moment`` (Unix time) has passed, plus a margin."""
    return max(0.0, moment - time.time()) + 0.3


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame)


@contextlib.asynccontextmanager
async def authed(base: str, jwt: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A connection with no token in its URL, identified by its ``auth`` frame."""
    async with unidentified(base, **kwargs) as client:
        await auth(client, jwt)
        yield client


def unique(prefix: str) -> str:
    """A channel or user name of one test alone, on a node that outlives the test."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"
