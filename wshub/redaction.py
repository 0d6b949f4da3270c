"""What must never reach a log line or a screen: passwords in URLs, tokens in query strings,
and the values of secret settings."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "is_secret", "redact_url", "scrub_tokens"]

MASK: Final = "***"

_SECRET_WORDS: Final = ("secret", "key", "password", "token")
_TOKEN_IN_QUERY: Final = re.compile(r"(?i)\b((?:access_)?token|api_key|key|password)=[^&\s\"']*")


def is_secret(name: str) -> bool:
    """Whether a setting's value is a secret, judged by its name (``jwt_secret``, ``api_key``)."""
    lowered = name.lower()
    if "public_key" in lowered:  # a path to a public key: nothing to hide
        return False
    return any(word in lowered for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """The URL with its password masked: ``redis://:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def scrub_tokens(text: str) -> str:
    """``token=...`` (and the like) in query strings replaced by ``token=***``."""
    if "=" not in text:
        return text
    return _TOKEN_IN_QUERY.sub(lambda m: f"{m.group(1)}={MASK}", text)
