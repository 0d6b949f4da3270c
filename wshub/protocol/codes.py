"""The error codes of ``error`` replies and the close codes a server closes with."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    FORBIDDEN = "forbidden"
    NOT_JOINED = "not_joined"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    LIMIT = "limit"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    UNAUTHORIZED = "unauthorized"
    TIMEOUT = "timeout"


class CloseCode:
    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    POLICY_VIOLATION: Final = 1008
    TOO_BIG: Final = 1009
    INTERNAL_ERROR: Final = 1011
    TOKEN_EXPIRED: Final = 4001
    NO_IDENTITY: Final = 4003
    """No valid identity: a bad ``auth`` frame, or none within the auth timeout."""
    SLOW_CONSUMER: Final = 4008
