"""JWT verification: a token in, an :class:`Identity` out, or :class:`TokenRejected`.

The accepted algorithm is pinned by the key, never read from the token: an HMAC secret
accepts HS256 only, an RSA public key RS256 only, a P-256 public key ES256 only. A token that
names any other algorithm, ``none`` included, is rejected before its signature is looked at,
which is what closes the classic HS/RS confusion (an attacker signing HS256 with the server's
public key as the HMAC secret).

Claims (docs/protocol.md "Auth"): ``sub`` is the user id and is required; ``exp`` ends the token
(and the connection, at that moment); ``join`` and ``publish`` are lists of channel patterns;
``channels`` is a list of channel names the server joins the connection to.

A subscription token is a token with a ``channel`` claim: it allows one user to join one
channel until its ``exp`` (:meth:`TokenVerifier.verify_subscription`). It is not a
connection token: one issued for a channel must not open a connection, so a token with
``channel`` identifies nobody.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

from wshub.core.permissions import Permissions
from wshub.protocol import is_channel_name, is_user_id

__all__ = [
    "MIN_SECRET_BYTES",
    "Identity",
    "TokenRejected",
    "TokenVerifier",
    "key_algorithm",
    "mint_token",
]

MIN_SECRET_BYTES = 32
"""RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits)."""

MIN_RSA_BITS = 2048


class TokenRejected(Exception):
    """A token that does not identify anyone. The message says why, for the 401 response."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is and what it may do."""

    user: str
    permissions: Permissions | None = None
    """None in open mode: every channel is allowed (subject to an ``authorize`` hook)."""
    expires: float | None = None
    """When the token ends, in seconds since the Unix epoch; None for a token without ``exp``."""
    channels: tuple[str, ...] = ()
    """The token's ``channels`` claim: joined by the server right after ``welcome``."""


def key_algorithm(key: object, kind: str) -> str:
    """The one algorithm a ``kind`` ("public" or "private") key implies: RS256 for RSA of at
    least MIN_RSA_BITS, ES256 for EC P-256; ValueError for any other key. The verifier and
    the signer share it, so a token ``wshub token`` signs is one the server accepts."""
    rsa_key = rsa.RSAPublicKey if kind == "public" else rsa.RSAPrivateKey
    ec_key = ec.EllipticCurvePublicKey if kind == "public" else ec.EllipticCurvePrivateKey
    if isinstance(key, rsa_key):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key must have at least {MIN_RSA_BITS} bits")
        return "RS256"
    if isinstance(key, ec_key) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"the {kind} key must be RSA (RS256) or EC P-256 (ES256)")


class TokenVerifier:
    """Verifies tokens against one key, with the one algorithm that key implies."""

    __slots__ = ("_key", "algorithm")

    def __init__(self, key: Any, algorithm: str) -> None:
        self._key = key
        self.algorithm = algorithm

    @classmethod
    def from_secret(cls, secret: str) -> TokenVerifier:
        """An HS256 verifier. Raises ValueError for a secret too short or shaped like a key."""
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes long")
        try:
            HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
        except jwt.InvalidKeyError as exc:  # a PEM key given as a secret: refuse, loudly
            raise ValueError(f"the JWT secret is not usable: {exc}") from None
        return cls(secret, "HS256")

    @classmethod
    def from_public_key(cls, pem: bytes) -> TokenVerifier:
        """An RS256 (RSA) or ES256 (P-256) verifier from a PEM public key."""
        try:
            key = load_pem_public_key(pem)
        except ValueError as exc:
            raise ValueError(f"not a PEM public key: {exc}") from None
        return cls(key, key_algorithm(key, "public"))

    @classmethod
    def from_public_key_file(cls, path: str | Path) -> TokenVerifier:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the JWT public key: {exc}") from None
        return cls.from_public_key(pem)

    def verify(self, token: str) -> Identity:
        """The identity a token proves, or TokenRejected saying why not."""
        claims = self._claims(token)
        if "channel" in claims:
            raise TokenRejected('a subscription token (with a "channel" claim) cannot identify')
        return identity_from_claims(claims)

    def verify_subscription(self, token: str, user: str, channel: str) -> float | None:
        """When a subscription token for ``user`` to join ``channel`` ends (None: never), or
        TokenRejected saying why it does not allow that join."""
        claims = self._claims(token)
        if claims.get("sub") != user:
            raise TokenRejected(f"subscription token is for another user, not {user!r}")
        if "channel" not in claims:
            raise TokenRejected('not a subscription token: it has no "channel" claim')
        if claims["channel"] != channel:
            raise TokenRejected(f"subscription token is for another channel, not {channel!r}")
        return _expiry(claims)

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                options={"require": ["sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("token signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(f"token algorithm not accepted (only {self.algorithm})") from None
        except jwt.MissingRequiredClaimError:
            raise TokenRejected('token has no "sub" claim') from None
        except jwt.DecodeError:
            raise TokenRejected("malformed token") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"invalid token: {exc}") from None
        return claims


def _expiry(claims: Mapping[str, Any]) -> float | None:
    exp = claims.get("exp")  # PyJWT has checked that it is a number, and in the future
    return None if exp is None else float(exp)


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    """Check the claims wshub reads; a token with a malformed one identifies nobody."""
    user = claims.get("sub")
    if not isinstance(user, str) or not is_user_id(user):
        raise TokenRejected('token "sub" must be a user id: 1 to 100 of A-Z a-z 0-9 _ - . : @')
    lists = {}
    for name in ("join", "publish"):
        value = claims.get(name, [])
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise TokenRejected(f'token "{name}" must be a list of channel patterns')
        lists[name] = value
    channels = claims.get("channels", [])
    if not isinstance(channels, list) or not all(
        isinstance(c, str) and is_channel_name(c) for c in channels
    ):
        raise TokenRejected('token "channels" must be a list of channel names')
    return Identity(
        user,
        Permissions(user, lists["join"], lists["publish"]),
        _expiry(claims),
        tuple(dict.fromkeys(channels)),
    )


def mint_token(
    secret: str,
    user: str,
    join: Iterable[str] = (),
    publish: Iterable[str] = (),
    ttl: float = 3600,
    now: float | None = None,
) -> str:
    """An HS256 token for development and tests (``wshub token``)."""
    TokenVerifier.from_secret(secret)  # the same rules as the server that will verify it
    if not is_user_id(user):
        raise ValueError(f"invalid user id {user!r}")
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": user,
        "iat": issued,
        "exp": issued + int(ttl),
        "join": list(join),
        "publish": list(publish),
    }
    return jwt.encode(claims, secret, algorithm="HS256")
