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
from wshub.client.policy import Action, Backoff, after_refusal, close_code_of_refusal

__all__ = ["reconnect"]

log = logging.getLogger("wshub.client")

T = TypeVar("T")


async def reconnect(
    open_link: Callable[[], Awaitable[T]],
    backoff: Backoff,
    renew_token: Callable[[], Awaitable[bool]],
    url: str,
) -> T | Stopped:
    """Try ``open_link`` until it succeeds; :class:`Stopped` when a refusal ends the client.

    A ``Retry-After`` on a refusal stretches the wait before the next attempt; a refused
    token asks ``renew_token`` for another, and stops the client when there is none.
    """
    retry_after = 0.0
    for attempt in itertools.count():
        await asyncio.sleep(backoff.delay(attempt, retry_after))
        retry_after = 0.0
        try:
            return await open_link()
        except Refused as exc:
            log.info("reconnect attempt %d to %s refused: %s", attempt + 1, url, exc)
            action = after_refusal(exc.status)
            if action is Action.STOP:
                return Stopped(close_code_of_refusal(exc.status), exc.reason)
            if action is Action.NEW_TOKEN and not await renew_token():
                return Stopped(4001, f"{exc.reason or 'token refused'}; no new token")
            retry_after = exc.retry_after_seconds
        except LINK_ERRORS as exc:
            log.info("reconnect attempt %d to %s failed: %s", attempt + 1, url, exc)
    raise AssertionError("unreachable")  # pragma: no cover
