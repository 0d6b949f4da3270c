"""WebSocket client connections for the load generator, on picows or on ``websockets``.

picows is a Cython client that hands each frame to a callback with no task, no queue and no
copy until asked: measured here, one process receives several times more frames per second
with it than with ``websockets`` (see ``docs/bench.md``). It is an optional extra
(``pip install 'wshub[bench]'``); without it the generator falls back to ``websockets``.

Both give the same small interface: :func:`connect` returns a :class:`Link` whose frames (text
payloads as ``bytes``) go to ``on_frame``, and whose end goes to ``on_close`` with the close
code (1006 when the TCP connection was lost without a close frame).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["CLIENTS", "Link", "available_client", "connect"]

CLIENTS = ("picows", "websockets")

OnFrame = Callable[[bytes], None]
OnClose = Callable[[int], None]


class Link(Protocol):
    def send(self, text: bytes) -> None:
        """Queue a text frame; never waits (the transport buffers)."""

    def close(self) -> None:
        """Start a normal close and return."""


def available_client(preferred: str = "auto") -> str:
    """The client library to use: ``preferred``, or picows when importable, or websockets."""
    if preferred != "auto":
        if preferred not in CLIENTS:
            raise ValueError(f"client must be auto, picows or websockets, got {preferred!r}")
        return preferred
    try:
        import picows  # noqa: F401
    except ImportError:
        return "websockets"
    return "picows"


async def connect(client: str, url: str, on_frame: OnFrame, on_close: OnClose) -> Link:
    """Open a WebSocket to ``url`` with ``client`` (``picows`` or ``websockets``)."""
    if client == "picows":
        return await _connect_picows(url, on_frame, on_close)
    return await _connect_websockets(url, on_frame, on_close)


async def _connect_picows(url: str, on_frame: OnFrame, on_close: OnClose) -> Link:
    from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):
        code = 1006

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT:
                on_frame(frame.get_payload_as_bytes())
            elif kind is WSMsgType.CLOSE:
                self.code = frame.get_close_code().value
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            on_close(self.code)

    class PicowsLink:
        __slots__ = ("transport",)

        def __init__(self, transport: WSTransport) -> None:
            self.transport = transport

        def send(self, text: bytes) -> None:
            self.transport.send(WSMsgType.TEXT, text)

        def close(self) -> None:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()

    transport, _ = await ws_connect(Listener, url, max_frame_size=64 * 1024 * 1024)
    return PicowsLink(transport)


async def _connect_websockets(url: str, on_frame: OnFrame, on_close: OnClose) -> Link:
    import websockets

    ws = await websockets.connect(url, max_size=None, ping_interval=None, compression=None)

    async def read() -> None:
        try:
            while True:
                raw = await ws.recv(decode=False)
                if isinstance(raw, bytes):
                    on_frame(raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            on_close(ws.close_code or 1006)

    class WebsocketsLink:
        __slots__ = ("sending", "task")

        def __init__(self) -> None:
            self.task = asyncio.create_task(read())
            self.sending: set[asyncio.Task[Any]] = set()

        def send(self, text: bytes) -> None:
            # websockets' send is a coroutine; frames still leave in order, as each task
            # writes its whole frame before it first waits.
            task = asyncio.create_task(ws.send(text, text=True))
            self.sending.add(task)
            task.add_done_callback(self._sent)

        def _sent(self, task: asyncio.Task[Any]) -> None:
            self.sending.discard(task)
            if not task.cancelled():
                with contextlib.suppress(websockets.ConnectionClosed):
                    task.exception()

        def close(self) -> None:
            asyncio.create_task(ws.close())  # noqa: RUF006 (ends with the connection)

    return WebsocketsLink()
