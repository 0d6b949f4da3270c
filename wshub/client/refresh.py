"""The connection's token: the one the next handshake sends, and its ``refresh`` before it ends.

With a token function, the client asks it for a new token at a random moment between 75 %
and 90 % of the current token's life (``welcome.expires``, then each ``ack.expires``) and
sends it in a ``refresh`` frame: the connection stays open across the old token's ``exp``.
A refused refresh (``forbidden``: another user's token; ``unauthorized``: one that does not
verify) is logged and told to ``on_refresh_error``; nothing else is tried on that link: the
server closes it with 4001 at the old token's ``exp``, and the client then asks the function
again and reconnects. A plain string token cannot be refreshed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from wshub.client.frames import ConnectionLost, FrameDict, ServerError
from wshub.client.tokens import TokenFunction, TokenSource, renew_in

__all__ = ["Tokens"]

log = logging.getLogger("wshub.client")

Request = Callable[[FrameDict], Awaitable[FrameDict]]


class Tokens:
    """Where the connection's token comes from, and the task that refreshes it."""

    def __init__(
        self,
        token: TokenSource | None,
        provider: TokenFunction | None = None,
        on_refresh: Callable[[float | None], object] | None = None,
        on_refresh_error: Callable[[Exception], object] | None = None,
    ) -> None:
        self.current: str | None = token if isinstance(token, str) else None
        self.function: TokenFunction | None = token if callable(token) else provider
        self.on_refresh = on_refresh
        self.on_refresh_error = on_refresh_error
        self.refreshes = 0
        """How many ``refresh`` frames the server accepted."""
        self.why_none = ""
        """Why the last :meth:`renew` gave no token, in words for :class:`Stopped`."""
        self._task: asyncio.Task[None] | None = None

    async def first(self) -> None:
        """Before the first handshake: ask the function if no string token was given."""
        if self.current is None and self.function is not None:
            await self.renew()

    async def renew(self) -> bool:
        """Ask the function for a new token (the server refused the current one); whether
        it gave one."""
        if self.function is None:
            self.why_none = "no new token (a string token cannot be renewed: pass a function)"
            return False
        token = await self._ask()
        if token is None:
            return False
        self.current = token
        return True

    def watch(self, expires: float | None, request: Request) -> None:
        """Refresh the token before ``expires`` (Unix seconds) on the link ``request`` sends
        on; None: it never ends."""
        self.stop()
        if expires is not None and self.function is not None:
            self._task = asyncio.create_task(self._refresh(expires, request))

    def stop(self) -> None:
        """The link is gone: its refresh with it (the next link has a ``welcome`` of its own)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _refresh(self, expires: float, request: Request) -> None:
        while True:
            await asyncio.sleep(renew_in(expires))
            token = await self._ask()
            if token is None:
                log.warning(
                    "no token to refresh with: %s; the server will close at exp", self.why_none
                )
                return
            try:
                reply = await request({"type": "refresh", "token": token})
            except ServerError as exc:
                log.warning("refresh refused: %s; the server will close at the old exp", exc)
                if self.on_refresh_error is not None:
                    self.on_refresh_error(exc)
                return
            except (ConnectionLost, TimeoutError) as exc:
                log.info("refresh not answered: %r", exc)  # the link's own loop handles it
                return
            self.current = token
            self.refreshes += 1
            new_expires = reply.get("expires")
            log.info("token refreshed; it now ends at %s", new_expires)
            if self.on_refresh is not None:
                self.on_refresh(new_expires)
            if new_expires is None:
                return
            expires = float(new_expires)

    async def _ask(self) -> str | None:
        assert self.function is not None
        try:
            token = await self.function()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the token function raised")
            self.why_none = f"the token function raised {exc!r}"
            return None
        if not token:
            self.why_none = "no new token (the token function returned None)"
            return None
        return token
