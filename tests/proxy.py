"""A TCP proxy the tests control, to break links the ways networks do.

- ``cut()`` / ``reset()``: abort every open link (both sides see a reset, as when a network
  drops);
- ``freeze()``: stop forwarding without closing anything and refuse new links, as a proxy or
  NAT that silently lost the connection: only a heartbeat can tell;
- ``sever()``: the target's side of every open link is closed, the client's side stays open
  and hears nothing, ever (a load balancer or NAT that forgot the flow); new links work;
- ``black_hole()``: open links and new ones are accepted and forward nothing, either way,
  until ``heal()``, after which new links work (the black-holed ones stay dead);
- ``latency``: seconds added before each chunk is forwarded;
- ``deafen_on``: a link goes silent, either way, from the first chunk its client sends that
  holds these bytes (a network that fails right after a connection's handshake).
"""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    __slots__ = ("client", "silent", "upstream")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.silent = False  # nothing is forwarded any more, either way, and nothing closes


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target port, byte for byte."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
        self.holing = False
        self.closed = False
        self.latency = 0.0
        self.deafen_on: bytes | None = None
        self.deafened = 0
        """Links that ``deafen_on`` silenced so far."""
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def links(self) -> int:
        """Open links that still forward."""
        return sum(1 for link in self._links if not link.silent)

    def _run(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A link accepted just before close() is handed to us after it: close it too, or
        # nothing would (its socket would be left for the garbage collector to warn about).
        if self.frozen or self.closed:
            writer.transport.abort()
            return
        link = _Link(writer)
        self._links.add(link)
        if self.holing:
            link.silent = True
            self._run(self._swallow(reader))
            return
        try:
            up_reader, link.upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self._abort(link)
            return
        if self.closed:  # closed while this link dialled the target
            self._abort(link)
            return
        self._run(self._pipe(reader, link.upstream, link, from_client=True))
        self._run(self._pipe(up_reader, writer, link))

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        link: _Link,
        from_client: bool = False,
    ) -> None:
        # A delay line: each chunk leaves ``latency`` seconds after it came, in order, so a
        # slow link adds latency without limiting throughput.
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(line, dst, link))
        loop = asyncio.get_running_loop()
        try:
            while data := await src.read(65536):
                if from_client and self.deafen_on is not None and self.deafen_on in data:
                    link.silent = True
                    self.deafened += 1
                if link.silent or self.frozen:
                    continue  # swallowed: the peer never hears of it
                line.put_nowait((loop.time() + self.latency, data))
            line.put_nowait((loop.time() + self.latency, b""))  # the end: what came goes first
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            # A silent or frozen link is closed by nobody but its peers (or close()).
            if not (link.silent or self.frozen):
                self._abort(link)

    async def _send(
        self, line: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter, link: _Link
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                due, data = await line.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    return
                if link.silent or self.frozen:
                    continue
                dst.write(data)
                await dst.drain()

    def _abort(self, link: _Link) -> None:
        self._links.discard(link)
        for writer in (link.client, link.upstream):
            if writer is not None:
                writer.transport.abort()

    def cut(self) -> None:
        """Drop every open link now; new connections are still accepted."""
        for link in list(self._links):
            self._abort(link)

    reset = cut

    def sever(self) -> None:
        """Close the target's side of every open link; the clients' sides stay open, silent."""
        for link in list(self._links):
            link.silent = True
            if link.upstream is not None:
                link.upstream.transport.abort()

    def black_hole(self) -> None:
        """Forward nothing on open links or new ones, and close nothing."""
        self.holing = True
        for link in self._links:
            link.silent = True

    def heal(self) -> None:
        """New links work again; the black-holed ones stay dead until their peers notice."""
        self.holing = False

    def freeze(self) -> None:
        """Swallow traffic on open links and refuse new ones, without closing anything."""
        self.frozen = True

    def thaw(self) -> None:
        """Forward again; links frozen before stay dead, new ones work."""
        self.frozen = False
        self.cut()

    async def close(self) -> None:
        self.closed = True
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.cut()  # links whose handler ran while the server closed
