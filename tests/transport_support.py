"""wshub's own WebSocket transport and the real wshub app over a fake transport.

:class:`FakeTransport` behaves like asyncio's socket transport where it matters here: a write
buffer with a high-water mark that calls ``pause_writing``/``resume_writing`` on the protocol,
writes after ``close()`` still accepted while the buffer is not empty (asyncio does the same),
``abort()``. The peer is the websockets library's own sans-I/O client, which parses every byte
the server wrote, so tests see exactly the frames a real client would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from wshub import Hub
from wshub.app.server import create_app
from wshub.core.connection import Connection
from wshub.transport.owned import WshubTransport

HIGH_WATER = 65_536
LOW_WATER = HIGH_WATER // 4  # asyncio's default low-water mark


class FakeTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.buffer = bytearray()
        self.delivered = bytearray()
        """What the peer has read."""
        self.reading = True
        """Whether the peer reads: when it does, every write reaches it at once."""
        self.paused = False
        self.reading_paused = False
        self.closing = False
        self.lost = False
        self.aborted = asyncio.Event()
        self.fail: Exception | None = None
        """Raised by ``write`` when set: a transport that breaks."""
        self.eof_written = False

    # --- the transport -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fail is not None:
            raise self.fail
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")  # as asyncio's
        if self.lost or not data:
            return
        self.buffer += data
        if self.reading:
            self.drain()
        elif not self.paused and len(self.buffer) > HIGH_WATER:
            self.paused = True
            self.protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def is_closing(self) -> bool:
        return self.closing or self.lost

    def close(self) -> None:
        self.closing = True
        if not self.buffer:
            self._lose()

    def abort(self) -> None:
        self.buffer.clear()
        self.aborted.set()
        self._lose()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    # --- the peer ------------------------------------------------------------------------

    def drain(self) -> None:
        """The peer reads everything buffered."""
        self.delivered += self.buffer
        self.buffer.clear()
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()
        if self.closing:
            self._lose()

    def read(self, n: int) -> None:
        """The peer reads ``n`` bytes; below the low-water mark the protocol may write again."""
        self.delivered += self.buffer[:n]
        del self.buffer[:n]
        if self.paused and len(self.buffer) <= LOW_WATER:
            self.paused = False
            self.protocol.resume_writing()

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


class Session:
    """One client of a real hub through the real transport on a fake socket."""

    def __init__(self, hub: Hub, path: str = "/ws?user=ann") -> None:
        config = Config(create_app(hub), ws="none", lifespan="off", log_config=None)
        config.load()
        loop = asyncio.get_running_loop()
        self.hub = hub
        self.config = config
        self.protocol = WshubTransport(config, ServerState(), {}, _loop=loop)
        self.transport = FakeTransport(self.protocol)
        self.protocol.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri(f"ws://127.0.0.1:8000{path}"))
        self.request = self.client.connect()
        self.client.send_request(self.request)
        self.frames: list[Frame] = []

    def send_client(self) -> None:
        """What the client queued, to the server."""
        data = b"".join(self.client.data_to_send())
        if data:
            self.protocol.data_received(data)

    async def open(self) -> Connection:
        before = set(self.hub._registry.attached)
        self.send_client()
        for _ in range(200):
            new = set(self.hub._registry.attached) - before
            if new:
                return new.pop()
            await asyncio.sleep(0.01)
        raise AssertionError(f"no connection; the server wrote {bytes(self.transport.delivered)!r}")

    def received(self) -> list[Frame]:
        """Every frame the peer has read so far, parsed by the websockets client."""
        data = bytes(self.transport.delivered)
        self.transport.delivered.clear()
        self.client.receive_data(data)
        self.frames += [e for e in self.client.events_received() if isinstance(e, Frame)]
        return self.frames

    def after_close(self) -> list[tuple[int, bytes]]:
        """The data frames the server wrote after its first close frame.

        Parsed here, not by the websockets client, which stops parsing at a close frame.
        """
        frames = server_frames(bytes(self.transport.delivered))
        closes = [i for i, (opcode, _) in enumerate(frames) if opcode == Opcode.CLOSE]
        assert closes, f"no close frame in {frames}"
        data = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
        return [f for f in frames[closes[0] + 1 :] if f[0] in data]


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame in ``data``, after the HTTP response."""
    head = data.find(b"\r\n\r\n")
    i = head + 4 if data.startswith(b"HTTP/") else 0
    frames = []
    while i < len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = int.from_bytes(data[i : i + 2]), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i : i + 8]), i + 8
        frames.append((opcode, data[i : i + n]))
        i += n
    return frames
