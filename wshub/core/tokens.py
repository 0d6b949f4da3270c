"""Signing tokens: connection tokens and subscription tokens, for ``wshub token`` and tests.

The algorithm follows the key, as on the verifying side (:mod:`wshub.core.auth`): an HMAC
secret signs HS256, an RSA private key RS256, a P-256 private key ES256. A production backend
signs its own tokens (``docs/security.md`` shows how with PyJWT); this is the same thing,
checked against the rules the server verifies with, so a token it prints is one the server
accepts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from wshub.core.auth import TokenVerifier, key_algorithm
from wshub.protocol import is_channel_name, is_user_id

__all__ = ["Claims", "Signer"]


@dataclass(frozen=True, slots=True)
class Claims:
    """What a token says. ``channel`` makes it a subscription token for that one channel;
    ``ttl`` 0 gives it no ``exp`` (allowed for subscription tokens, unwise for the others)."""

    user: str
    join: Iterable[str] = ()
    publish: Iterable[str] = ()
    channels: Iterable[str] = ()
    channel: str | None = None
    ttl: float = 3600
    extra: dict[str, Any] = field(default_factory=dict)

    def payload(self, now: float | None = None) -> dict[str, Any]:
        """The JWT claims, or ValueError naming what the server would refuse."""
        if not is_user_id(self.user):
            raise ValueError(f"invalid user id {self.user!r}")
        channels = list(self.channels)
        for name in [*channels, *([self.channel] if self.channel is not None else [])]:
            if not is_channel_name(name):
                raise ValueError(f"invalid channel name {name!r}")
        if self.ttl < 0:
            raise ValueError("the lifetime must not be negative")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {**self.extra, "sub": self.user, "iat": issued}
        if self.ttl:
            claims["exp"] = issued + int(self.ttl)
        if self.channel is not None:
            claims["channel"] = self.channel
        else:
            claims["join"] = list(self.join)
            claims["publish"] = list(self.publish)
            if channels:
                claims["channels"] = channels
        return claims


class Signer:
    """Signs tokens with one key, in the one algorithm that key implies."""

    __slots__ = ("_key", "algorithm")

    def __init__(self, key: Any, algorithm: str) -> None:
        self._key = key
        self.algorithm = algorithm

    @classmethod
    def from_secret(cls, secret: str) -> Signer:
        """HS256, with a secret the server would accept (ValueError otherwise)."""
        TokenVerifier.from_secret(secret)
        return cls(secret, "HS256")

    @classmethod
    def from_private_key(cls, pem: bytes) -> Signer:
        """RS256 for an RSA private key, ES256 for a P-256 one (PEM, unencrypted)."""
        try:
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
        return cls(key, key_algorithm(key, "private"))

    @classmethod
    def from_private_key_file(cls, path: str | Path) -> Signer:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the private key: {exc}") from None
        return cls.from_private_key(pem)

    def sign(self, claims: Claims, now: float | None = None) -> str:
        return jwt.encode(claims.payload(now), self._key, algorithm=self.algorithm)
