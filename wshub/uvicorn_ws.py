"""wshub's uvicorn WebSocket protocol: uvicorn's own, plus two things a hub needs.

uvicorn's ``send`` waits while the transport's write buffer is above its high-water mark, which
keeps a slow reader's memory bounded, but it also means a close frame for that reader waits
forever, and a closing transport waits for a flush that never comes. A hub must be able to
cut such a peer off. This class adds:

- the ASGI extension ``wshub.close_now``: queue a close frame past a full buffer, and abort
  the TCP connection if the peer has not completed the close within the given timeout;
- an abort, not a graceful close, when a keepalive ping goes unanswered: a dead peer will
  never read what is still buffered for it;
- the ASGI extension ``wshub.fast`` (a :class:`wshub.connection.FastPath`): write pre-built
  frame bytes straight to the transport and learn when its buffer drains, so that a fan-out
  costs one ``write`` per subscriber instead of an ASGI ``send`` with its encoding, framing
  and task switch. Offered only when no extension (compression) was negotiated, since only
  then are a frame's bytes the same for every recipient.

Everything else, the standard ASGI path included, is uvicorn's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["WshubWebSocketProtocol"]


class _FastPath:
    """The ``wshub.fast`` extension of one connection."""

    __slots__ = ("_protocol", "callback")

    def __init__(self, protocol: WshubWebSocketProtocol) -> None:
        self._protocol = protocol
        self.callback: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        p = self._protocol
        if not (p.close_sent or p.disconnected):
            p.transport.write(data)

    def writable(self) -> bool:
        return self._protocol.writable.is_set()

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback


class WshubWebSocketProtocol(WebSocketsSansIOProtocol):
    fast_path: _FastPath | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            extensions = scope["extensions"]
            extensions["wshub.close_now"] = self.close_now
            if not self.response.headers.get("Sec-WebSocket-Extensions"):
                self.fast_path = extensions["wshub.fast"] = _FastPath(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        fast = self.fast_path
        if fast is not None and fast.callback is not None:
            fast.callback()

    def close_now(self, code: int, reason: str, timeout: float) -> None:
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:  # read the peer's close reply
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(timeout, self.transport.abort)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self.transport.abort()
