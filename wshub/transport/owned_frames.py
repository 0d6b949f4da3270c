"""A live WebSocket of wshub's own transport: frames in by callback, pre-framed bytes out.

Built on the sans-I/O ``websockets.server.ServerProtocol`` (its public API only): it parses
frames, answers pings and close frames, and keeps the close state; this class moves bytes
between it and the asyncio transport, and hands each complete message to the connection's
:class:`~wshub.core.serving.FrameLine`, with no ``receive()`` queue and no task per
connection. It is also the connection's :class:`~wshub.core.connection.Socket` and
:class:`~wshub.core.connection.FastPath`, so a live connection is this object, the sans-I/O
parser, the hub's ``Connection`` and its line: the handshake's request, headers and scope are
gone once it is open.

Reading stops for three reasons, each its own hold: the line is full (the broker is slow), the
peer does not read its pongs (the transport is full), a ping over the rate. Once a close is
under way every hold is dropped, since the peer's close reply must be read.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from wshub.core.connection import FastPath
from wshub.core.ratelimit import MAX_PAUSE
from wshub.protocol import CloseCode
from wshub.transport.sessions import OwnedSession, spawn

__all__ = ["LiveWebSocket"]

RATE_HOLD = MAX_PAUSE / 2
"""Seconds a peer's reading is held back after a ping over its rate: half the second in which
its bucket pays off a full debt (a burst is one second's worth), so that a flood stays in debt
and still ends in 1008."""

_PONG = b"\x8a"  # FIN + opcode 10: the first byte of every pong websockets writes
_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_PING, _PONG_OP, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE
_LINE_FULL, _PONGS_UNREAD, _RATE = 1, 2, 4  # the holds on reading

# RFC 6455 codes that never go on the wire from wshub's own code: the peer's or the parser's.
_PROTOCOL_ERROR, _NO_STATUS, _ABNORMAL, _INVALID_DATA = 1002, 1005, 1006, 1007


class _Keepalive(asyncio.Protocol):
    """A live WebSocket's state, and its pings: the keepalive's and the peer's."""

    # Slots: one of these per connection, and an instance dict would cost about 1 KB of it.
    __slots__ = (
        "_backlog", "_close_timer", "_drained", "_fragment_text", "_fragments", "_holds",
        "_on_writable", "_ping_filter", "_ping_payload", "_ping_timer", "_pong_timer",
        "_rate_timer", "close_timeout", "ended", "inbox", "loop", "lost", "open",
        "ping_interval", "ping_timeout", "session", "transport", "writable_now", "ws",
    )  # fmt: skip

    ws: ServerProtocol
    transport: asyncio.Transport

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.close_timeout = 10.0
        self.ping_interval: float | None = None
        self.ping_timeout: float | None = None
        self.session: OwnedSession | None = None
        self.inbox: asyncio.Queue[dict[str, Any]] | None = None
        """While the client has not said who it is (its ``auth`` frame): its messages."""
        self.open = False
        """The close handshake has not begun: frames may be written."""
        self.lost = False
        self.ended = False
        self.writable_now = True
        self._holds = 0
        self._backlog: list[str | None] | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_text = False
        self._on_writable: Callable[[], None] | None = None
        self._ping_filter: Callable[[], bool] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._drained: asyncio.Future[None] | None = None

    def _pong(self) -> None:
        output = self.ws.data_to_send()
        allow = self._ping_filter
        if allow is not None:  # one pong per ping in the output; ask for each
            answered = [chunk for chunk in output if chunk[:1] != _PONG or allow()]
            if len(answered) < len(output) and self._rate_timer is None:
                # Refusing the pong is not enough: parsing a flood of tiny pings is what
                # costs the node; held, the peer costs at most two reads a second.
                self._hold(_RATE)
                self._rate_timer = self.loop.call_later(RATE_HOLD, self._end_rate_hold)
            output = answered
        if output and not self.lost:
            self.transport.write(b"".join(output))
        if not self.writable_now:
            self._hold(_PONGS_UNREAD)  # the peer does not read its pongs: read no more pings

    def _end_rate_hold(self) -> None:
        self._rate_timer = None
        self._release(_RATE)

    def start_keepalive(self) -> None:
        if self.ping_interval:
            self._schedule_ping()

    def _schedule_ping(self) -> None:
        if self.ping_interval and self.open:
            self._ping_timer = self.loop.call_later(self.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping_timer = None
        if not self.open or self.ws.state is not State.OPEN:
            return
        self._ping_payload = payload = struct.pack("!I", random.getrandbits(32))
        self.ws.send_ping(payload)
        self.transport.write(b"".join(self.ws.data_to_send()))
        if self.ping_timeout:
            self._pong_timer = self.loop.call_later(self.ping_timeout, self._keepalive_timeout)
        else:
            self._schedule_ping()

    def _keepalive_timeout(self) -> None:
        """No pong in time: a dead peer will never read what is buffered for it, so the
        close frame is a courtesy and the connection is cut at once."""
        self._pong_timer = None
        if self.open:
            self.ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.transport.write(b"".join(self.ws.data_to_send()))
            self.open = False
        self.end(_ABNORMAL)
        self.transport.abort()

    def stop_timers(self) -> None:
        for timer in (self._ping_timer, self._pong_timer, self._close_timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = self._close_timer = self._rate_timer = None

    def _hold(self, reason: int) -> None:
        raise NotImplementedError

    def _release(self, reason: int) -> None:
        raise NotImplementedError

    def end(self, code: int | None) -> None:
        raise NotImplementedError


class LiveWebSocket(_Keepalive):
    """The frame-level half of wshub's own WebSocket protocol (the handshake is the
    subclass's): reading, writing, closing."""

    __slots__ = ()

    # --- reading ---------------------------------------------------------------------------

    def frames_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        self.handle_events()
        if ws.parser_exc is not None and ws.close_sent is not None and not self.lost:
            self._fail()

    def eof_received(self) -> bool | None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.receive_eof()
            self.handle_events()
        if self.open:  # the peer's FIN without a close frame: an abnormal closure
            self.open = False
            self.end(_ABNORMAL)
        return None  # the transport closes itself

    def handle_events(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            else:
                self.handshake(event)

    def handshake(self, request: Any) -> None:
        raise NotImplementedError

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is _TEXT or op is _BINARY:
            if frame.fin:
                self._message(bytes(frame.data), op is _TEXT)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragment_text = op is _TEXT
        elif op is _CONT:
            fragments = self._fragments
            assert fragments is not None  # the parser refuses a continuation out of place
            fragments.append(bytes(frame.data))
            if frame.fin:
                self._fragments = None
                self._message(b"".join(fragments), self._fragment_text)
        elif op is _PING:
            self._pong()
        elif op is _PONG_OP:
            if self._ping_payload is not None and bytes(frame.data) == self._ping_payload:
                self._ping_payload = None
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                    self._pong_timer = None
                self._schedule_ping()
        elif op is _CLOSE:
            self._peer_closed()

    def _message(self, data: bytes, text: bool) -> None:
        if self.ended:
            return  # closing: the client's frames are no longer served
        if text:
            try:
                message: str | None = data.decode()
            except UnicodeDecodeError:
                self.ws.fail(_INVALID_DATA, "invalid UTF-8")
                self._fail()
                return
        else:
            message = None
        inbox = self.inbox
        if inbox is not None:
            key = "text" if text else "bytes"
            inbox.put_nowait({"type": "websocket.receive", key: message if text else data})
            return
        session = self.session
        if session is None:
            return
        backlog = self._backlog
        if backlog is not None:
            backlog.append(message)
        elif not session.line.offer(message):
            self._backlog = [message]
            self._hold(_LINE_FULL)
            spawn(self._wait_for_room(session))

    async def _wait_for_room(self, session: OwnedSession) -> None:
        """The line was full: put what arrived meanwhile, in order, then read again."""
        backlog = self._backlog
        assert backlog is not None
        while backlog and not self.ended:
            await session.line.put(backlog.pop(0))
        self._backlog = None
        self._release(_LINE_FULL)

    def _hold(self, reason: int) -> None:
        if not self._holds and not self.lost:
            self.transport.pause_reading()
        self._holds |= reason

    def _release(self, reason: int) -> None:
        if self._holds & reason:
            self._holds &= ~reason
            if not self._holds and not self.lost:
                self.transport.resume_reading()

    def _read_again(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        self._release(_LINE_FULL | _PONGS_UNREAD | _RATE)

    # --- writing (the FastPath and the Socket) ---------------------------------------------

    @property
    def fast(self) -> FastPath:
        return self

    def write(self, data: bytes) -> None:
        if self.open:
            self.transport.write(data)

    def writable(self) -> bool:
        return self.writable_now

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        self._on_writable = callback

    def on_ping(self, allow: Callable[[], bool] | None) -> None:
        self._ping_filter = allow

    async def send_text(self, text: str) -> None:
        """For a writer that awaits (the ASGI one, when the fast path is turned off)."""
        while not self.writable_now and not self.lost:
            self._drained = self._drained or self.loop.create_future()
            await self._drained
        if self.lost:
            raise ConnectionResetError("the peer is gone")
        if self.open:
            self.ws.send_text(text.encode())
            self.transport.write(b"".join(self.ws.data_to_send()))

    def pause_writing(self) -> None:
        self.writable_now = False

    def resume_writing(self) -> None:
        self.writable_now = True
        self._release(_PONGS_UNREAD)
        self._wake_writer()
        callback = self._on_writable
        if callback is not None:
            callback()

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # --- closing ---------------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        self.close_now(code, reason, self.close_timeout)

    def drop(self, code: int, reason: str) -> None:
        self.close_now(code, reason, self.close_timeout)

    def close_now(self, code: int, reason: str, timeout: float) -> None:
        """The close frame, past a full buffer if need be; the peer has ``timeout`` to
        complete the close, whoever wrote the close frame, then it is cut off."""
        if self.lost:
            return
        if self.open:
            self.open = False
            self.ws.send_close(code, reason)
            self.transport.write(b"".join(self.ws.data_to_send()))
            self._read_again()  # the peer's close reply
            self.end(code)
        self._abort_in(timeout)

    def _peer_closed(self) -> None:
        ws = self.ws
        if self.open:  # websockets answered it: write the reply, then close the TCP side
            self.open = False
            self.transport.write(b"".join(ws.data_to_send()))
            self.end(ws.close_rcvd.code if ws.close_rcvd is not None else _NO_STATUS)
        transport = self.transport
        transport.close()
        # A peer that closed and stopped reading would hold a full buffer for good.
        if transport.get_write_buffer_size():
            self._abort_in(self.close_timeout)
        elif self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _fail(self) -> None:
        """The parser failed the connection (1009 too big, 1007, 1002): the close frame, then
        a half-close (RFC 6455 7.1.1), then what the peer still sends is read and dropped
        until its own EOF, or the close timeout. Closing with unread data would send RST,
        which can destroy the close frame before the peer reads it."""
        ws = self.ws
        close = ws.close_sent
        if not self.open:
            return
        self.open = False
        transport = self.transport
        transport.write(b"".join(ws.data_to_send()))
        if transport.can_write_eof():  # not over TLS: then the timeout ends it
            transport.write_eof()
        self._read_again()
        self.end(close.code if close is not None else _PROTOCOL_ERROR)
        self._abort_in(self.close_timeout)

    def _abort_in(self, timeout: float) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = self.loop.call_later(timeout, self.transport.abort)

    def end(self, code: int | None) -> None:
        """The connection is over for the hub (it may still be closing): once."""
        if self.ended:
            return
        self.ended = True
        inbox = self.inbox
        if inbox is not None:
            inbox.put_nowait({"type": "websocket.disconnect", "code": code})
        session, self.session = self.session, None
        if session is not None:
            spawn(session.end(code))

    def frames_lost(self) -> None:
        self.lost = True
        self.open = False
        self.stop_timers()
        self.writable_now = True
        self._wake_writer()
        self.end(_ABNORMAL)
