"""Subscription tokens: a channel's grant, asked of the application per channel.

The application's ``subscription_token(channel)`` is called on every ``join`` of the channel,
on every re-join after a reconnect, and again before the token's ``exp`` (read from the JWT
without verifying it: the server does that), at a random moment between 75 % and 90 % of its
life. The channel is then joined again with the fresh token, which the server answers with
``joined``; the old token's end then takes nothing away, so messages flow on without a gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from wshub.client.frames import ConnectionLost, ServerError
from wshub.client.tokens import SubscriptionTokenFunction, expiry_of, renew_in

__all__ = ["Grants"]

log = logging.getLogger("wshub.client")

Rejoin = Callable[[str, str], Awaitable[object]]
"""Join a channel already joined again, with a fresh subscription token."""


class Grants:
    """The subscription tokens of the joined channels, and the tasks that renew them."""

    def __init__(self, function: SubscriptionTokenFunction | None, rejoin: Rejoin) -> None:
        self.function = function
        self.renewals = 0
        """How many channels were joined again with a renewed token."""
        self._rejoin = rejoin
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def token_for(self, channel: str) -> str | None:
        """The subscription token to join ``channel`` with (None: join without one), and
        its renewal planned."""
        self.forget(channel)
        token = await self._ask(channel)
        expires = None if token is None else expiry_of(token)
        if expires is not None:
            self._tasks[channel] = asyncio.create_task(self._renew(channel, expires))
        return token

    def forget(self, channel: str) -> None:
        """The channel was left, or its join failed: no more renewals."""
        task = self._tasks.pop(channel, None)
        if task is not None:
            task.cancel()

    def forget_all(self) -> None:
        """The link is gone: the re-joins of the next one ask for tokens afresh."""
        for channel in list(self._tasks):
            self.forget(channel)

    async def _renew(self, channel: str, expires: float) -> None:
        while True:
            await asyncio.sleep(renew_in(expires))
            token = await self._ask(channel)
            if token is None:
                log.warning("no fresh subscription token for %s: it ends at its exp", channel)
                return
            try:
                await self._rejoin(channel, token)
            except ServerError as exc:
                log.warning("renewed subscription token for %s refused: %s", channel, exc)
                return
            except (ConnectionLost, TimeoutError) as exc:
                log.info("re-join of %s not answered: %r", channel, exc)
                return
            self.renewals += 1
            next_expires = expiry_of(token)
            if next_expires is None:
                return
            expires = next_expires

    async def _ask(self, channel: str) -> str | None:
        if self.function is None:
            return None
        try:
            return await self.function(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Joined without one: the server answers forbidden, which the join reports.
            log.exception("the subscription token function raised for %s", channel)
            return None
