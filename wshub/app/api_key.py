"""The API key (``--api-key``): one FastAPI security dependency for ``/api`` and ``/admin/stats``.

Callers send ``Authorization: apikey KEY``. The scheme is matched in any case, as HTTP defines
authentication schemes (RFC 9110, section 11.1), so ``APIKEY KEY`` passes too; then one space
and exactly the key, compared in constant time. Anything else (no header, another key,
``Bearer KEY``, the bare key, ``apikey  KEY`` with two spaces) gets 401 with
``WWW-Authenticate: apikey``; with no key configured, 403.
"""

# No `from __future__ import annotations`: FastAPI 0.117 (the lowest tested) reads the
# annotations of an instance's __call__ without its module's names, so `request` must be the
# class itself, not a string.
import hmac
from typing import Final

from fastapi import HTTPException
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

__all__ = ["SCHEME", "ApiKey"]

SCHEME: Final = "apikey"


class ApiKey(APIKeyHeader):
    """Checks the ``Authorization`` header against the server's key; use with ``Security()``.

    Being an :class:`~fastapi.security.APIKeyHeader`, it also documents the header in
    ``/docs``.
    """

    def __init__(self, key: str | None) -> None:
        super().__init__(
            name="Authorization",
            scheme_name=SCHEME,
            description="`apikey KEY`, where KEY is the server's `--api-key`.",
            auto_error=False,
        )
        self._key = key.encode() if key else None

    async def __call__(self, request: HTTPConnection) -> None:
        """Pass, or raise the 401 (wrong or missing key) or 403 (no key configured)."""
        if self._key is None:
            raise HTTPException(403, "the admin API is off: start wshub with --api-key")
        if not self.matches(request.headers.get("authorization")):
            raise HTTPException(
                401,
                "missing or wrong API key: send the header 'Authorization: apikey KEY'",
                headers={"WWW-Authenticate": SCHEME},
            )

    def matches(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the key."""
        if not header or self._key is None:
            return False
        scheme, space, given = header.partition(" ")
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent, so a
        # key outside ASCII matches when it was sent as UTF-8.
        right_scheme = space == " " and scheme.lower() == SCHEME
        return hmac.compare_digest(given.encode("latin-1"), self._key) and right_scheme
