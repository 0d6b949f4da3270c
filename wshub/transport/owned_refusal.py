"""The answer to a WebSocket request that the sans-I/O parser refused, before any upgrade."""

from __future__ import annotations

from websockets.datastructures import Headers
from websockets.exceptions import SecurityError
from websockets.http11 import Response

__all__ = ["refusal_response"]


def refusal_response(exc: Exception, output: list[bytes]) -> tuple[int, str, bytes]:
    """The status, the reason to log and the bytes to write for a request the parser refused.

    websockets answers a request line or header that is too long with 414 or 431 (its
    response is in ``output``), and anything else it cannot take (a body, another method, a
    malformed line) with no response at all: that gets a plain 400. The reason is the
    parser's for size limits (it names the limit, never the request's content) and generic
    otherwise, since a malformed header line may carry a credential.
    """
    raw = b"".join(output)
    if raw.startswith(b"HTTP/"):
        status = int(raw.split(b" ", 2)[1])
    else:
        status = 400
        body = b"Failed to open a WebSocket connection: not a valid WebSocket request.\n"
        headers = [
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", "text/plain; charset=utf-8"),
        ]
        raw = Response(status, "Bad Request", Headers(headers), body).serialize()
    reason = str(exc) if isinstance(exc, SecurityError) else "not a valid WebSocket request"
    return status, reason, raw
