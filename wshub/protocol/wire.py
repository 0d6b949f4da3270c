"""A server frame, encoded once: its text for ASGI servers, its wire bytes for the fast path.

For an uncompressed connection, a WebSocket text frame from the server is the same bytes for
every recipient (server frames are not masked). So a publication is framed once and those bytes
are written to every subscriber's socket, instead of each connection encoding the text and
framing it again (RFC 6455, section 5.2).
"""

from __future__ import annotations

import struct

__all__ = ["SharedFrame", "text_frame"]

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame carrying ``payload`` (UTF-8)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", _FIN_TEXT, n)
    elif n < 65536:
        header = struct.pack("!BBH", _FIN_TEXT, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, n)
    return header + payload


class SharedFrame:
    """A server frame to push to many connections: text now, wire bytes on first need."""

    __slots__ = ("_wire", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._wire = text_frame(self.text.encode())
        return wire

    def __repr__(self) -> str:
        return f"SharedFrame({self.text[:60]!r})"
