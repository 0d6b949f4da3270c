"""The client behind a trusted proxy, on wshub's own WebSocket paths: uvicorn's rule, by uvicorn.

With ``proxy_headers`` on (its default), uvicorn wraps the app in its
:class:`~uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware`: when the socket's peer is
one of ``forwarded_allow_ips``, the scope's ``client`` becomes the rightmost address of
``X-Forwarded-For`` that is not itself trusted, and its ``scheme`` follows
``X-Forwarded-Proto`` (``https`` makes a WebSocket ``wss``). wshub's own transport builds the
scope of ``/ws`` and ``/ws/{id}`` without ASGI, so no middleware sees it. This runs that same
middleware over the scope, so that the connection log, the hooks and channel checks see the
address a plain ASGI route would: its call awaits nothing but the app it wraps, here one that
returns at once, so it completes in one step, with no task and no event loop turn.
"""

from __future__ import annotations

import weakref
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

__all__ = ["ForwardedClient", "forwarded_of"]


async def _as_is(scope: Any, receive: Any, send: Any) -> None:
    """The app under the middleware: the middleware changed the scope in place."""


async def _never(*_: Any) -> Any:
    raise AssertionError("the proxy header rule neither receives nor sends")


class ForwardedClient:
    """``client`` and ``scheme`` of a scope, as uvicorn's proxy header rule gives them."""

    __slots__ = ("_middleware",)

    def __init__(self, proxy_headers: bool, trusted: list[str] | str) -> None:
        self._middleware = (
            ProxyHeadersMiddleware(_as_is, trusted_hosts=trusted) if proxy_headers else None
        )

    def apply(self, scope: dict[str, Any]) -> None:
        """Set the scope's ``client`` and ``scheme`` from trusted proxy headers, if any."""
        if self._middleware is None:
            return
        step = self._middleware(scope, _never, _never)  # type: ignore[arg-type]
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()
        raise RuntimeError("uvicorn's ProxyHeadersMiddleware waited on something")


_by_config: weakref.WeakKeyDictionary[Any, ForwardedClient] = weakref.WeakKeyDictionary()


def forwarded_of(config: Any) -> ForwardedClient:
    """The rule of a uvicorn ``Config`` (its ``proxy_headers``, ``forwarded_allow_ips``)."""
    rule = _by_config.get(config)
    if rule is None:
        rule = _by_config[config] = ForwardedClient(
            config.proxy_headers, config.forwarded_allow_ips
        )
    return rule
