"""The checks made before a WebSocket upgrade: the Origin, then who the client is.

Everything here reads the ASGI scope and answers with an :class:`~wshub.core.auth.Identity` or a
:class:`Refusal`; no I/O. Refusing before the upgrade (the protocol's "Transport" section)
means a forged token or a foreign page costs the server one HTTP response, not a connection.
The hub's own reasons (:class:`~wshub.core.admission.Refused`) become refusals here too.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from wshub import protocol
from wshub.core.admission import Refused
from wshub.core.auth import Identity, TokenRejected, TokenVerifier

__all__ = ["Handshake", "Refusal", "normalize_origin", "open_mode_user", "refusal_for"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused, as an HTTP status for the denial response."""

    status: int
    reason: str
    retry_after: int | None = None


def refusal_for(refused: Refused, retry_after: int) -> Refusal:
    """The denial response for a hub's reason: 503 (each is temporary) with ``Retry-After``."""
    return Refusal(503, refused.reason, retry_after)


def normalize_origin(origin: str) -> str:
    """Origins compare case-insensitively (scheme and host), and without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def _query(scope: Mapping[str, Any]) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def open_mode_user(scope: Mapping[str, Any]) -> str | None:
    """The user id in open mode: ``?user=NAME``, or a fresh ``anon-XXXXXXXX``.

    None when the requested name is not a valid user id.
    """
    names = _query(scope).get("user")
    if not names:
        return f"anon-{secrets.token_hex(4)}"
    name = names[0]
    return name if protocol.is_user_id(name) else None


def bearer_token(scope: Mapping[str, Any]) -> str | None:
    """The token from ``Authorization: Bearer ...`` or else from ``?token=``.

    The header wins when both are present: it is what a backend sets deliberately, while a
    query string is what a browser (which cannot set headers on a WebSocket) has to use.
    """
    header = _header(scope, b"authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    tokens = _query(scope).get("token")
    return tokens[0] if tokens else None


class Handshake:
    """The node's handshake policy: the token verifier (None: open mode) and allowed origins.

    An empty ``allowed_origins`` accepts every origin. A request with no ``Origin`` header is
    accepted either way: browsers always send one, and the attack an origin check stops
    (another site's page opening a socket with the visitor's cookies) runs in a browser.
    """

    def __init__(
        self, verifier: TokenVerifier | None = None, allowed_origins: Iterable[str] = ()
    ) -> None:
        self.verifier = verifier
        self.allowed_origins = frozenset(normalize_origin(o) for o in allowed_origins if o.strip())

    @property
    def open_mode(self) -> bool:
        return self.verifier is None

    def _foreign(self, scope: Mapping[str, Any]) -> Refusal | None:
        if self.allowed_origins:
            origin = _header(scope, b"origin")
            if origin is not None and normalize_origin(origin) not in self.allowed_origins:
                return Refusal(403, f"origin not allowed: {origin}")
        return None

    def identify_or_wait(self, scope: Mapping[str, Any]) -> Identity | Refusal | None:
        """As :meth:`identify`, for an endpoint that also takes identity in an ``auth`` frame:
        with auth configured and no token at all, None (identity comes after the upgrade)."""
        if self.verifier is not None and not bearer_token(scope):
            return self._foreign(scope)
        return self.identify(scope)

    def identify(self, scope: Mapping[str, Any]) -> Identity | Refusal:
        """Who is connecting, or why the handshake is refused (403 origin, 401 token)."""
        foreign = self._foreign(scope)
        if foreign is not None:
            return foreign
        if self.verifier is None:
            user = open_mode_user(scope)
            if user is None:
                return Refusal(400, "invalid user id")
            return Identity(user)
        token = bearer_token(scope)
        if not token:
            return Refusal(401, "missing token: send ?token= or Authorization: Bearer")
        try:
            return self.verifier.verify(token)
        except TokenRejected as exc:
            return Refusal(401, str(exc))
