"""The reconnect loop: attempts with backoff and jitter until one opens, or a refusal says
the client must stop (:func:`~wshub.client.policy.after_refusal`)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from wshub.client.dial import LINK_ERRORS
from wshub.client.frames import Refused, Stopped
from wshub.client.policy import Action, Backoff, after_close
from wshub.client.refresh import Tokens

__all__ = ["reconnect"]

log = logging.getLogger("wshub.client")

T = TypeVar("T")


async def reconnect(
    open_link: Callable[[], Awaitable[T]],
    backoff: Backoff,
    tokens: Tokens,
    url: str,
) -> T | Stopped:
    """Try ``open_link`` until it succeeds; :class:`Stopped` when a refusal ends the client.

    A ``Retry-After`` on a refusal stretches the wait before the next attempt; a refused
    token (HTTP 401, or 4003 after the ``auth`` frame) asks ``tokens`` for another, and
    stops the client when there is none.
    """
    retry_after = 0.0
    for attempt in itertools.count():
        await asyncio.sleep(backoff.delay(attempt, retry_after))
        retry_after = 0.0
        try:
            return await open_link()
        except Refused as exc:
            log.info("reconnect attempt %d to %s refused: %s", attempt + 1, url, exc)
            action = after_close(exc.code)
            if action is Action.STOP:
                return Stopped(exc.code, exc.reason)
            if action is Action.NEW_TOKEN and not await tokens.renew():
                return Stopped(exc.code, f"{exc.reason or 'token refused'}; {tokens.why_none}")
            retry_after = exc.retry_after_seconds
        except LINK_ERRORS as exc:
            log.info("reconnect attempt %d to %s failed: %s", attempt + 1, url, exc)
    raise AssertionError("unreachable")  # pragma: no cover
