"""wshub's own WebSocket transport (wshub.transport.owned), the default of ``wshub serve``.

Against real ``wshub serve`` processes and, for library mode, a real uvicorn in this process
with ``ws=WshubTransport``. Raw sockets with websockets' sans-I/O client where the test is
about bytes on the wire (reads split, fragments, a peer that never reads or answers), and
clients that are not ours (the websockets library, Node ``ws``) for the rest.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.channel_app import build, current_user
from tests.conftest import ServerFactory
from tests.support import ServerProcess, connect, http_get, uvicorn_in_process
from wshub import Hub
from wshub.transport.owned import WshubTransport

NODE_WS = Path(__file__).resolve().parent.parent / "benchmarks" / "peers" / "node_ws"
UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
SECRET = "s" * 40


@pytest.fixture(scope="module")
def node() -> Iterator[ServerProcess]:
    proc = ServerProcess(
        "--max-frame-bytes", "1000", "--ping-interval", "0.3", "--ping-timeout", "0.6"
    ).start()
    yield proc
    proc.stop()


async def connections(node: ServerProcess) -> int:
    status, body = await http_get(f"{node.http}/healthz")
    assert status == 200
    return int(json.loads(body)["connections"])


async def until_connections(node: ServerProcess, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (now := await connections(node)) != count:
        assert time.monotonic() < deadline, f"{now} connections, expected {count}"
        await asyncio.sleep(0.05)


class RawClient:
    """A WebSocket client on a bare socket: websockets' sans-I/O client, driven by hand."""

    def __init__(self, port: int, path: str, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect(("127.0.0.1", port))
        self.ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"), max_size=None)
        self.ws.send_request(self.ws.connect())
        self.flush()
        self.frames: list[Frame] = []

    def flush(self) -> None:
        self.sock.sendall(b"".join(self.ws.data_to_send()))

    async def frame(self, timeout: float = 5.0) -> Frame:
        """The next frame from the server (pings are answered as websockets does)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.sock.setblocking(False)
        while not self.frames:
            assert loop.time() < deadline, "no frame from the server"
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
            self.ws.receive_data(data) if data else self.ws.receive_eof()
            self.frames += [e for e in self.ws.events_received() if isinstance(e, Frame)]
            self.flush()
            if not data and not self.frames:
                raise ConnectionError("the server closed the connection")
        return self.frames.pop(0)

    async def opened(self) -> None:
        """Read until the server's 101 is in (a chat says nothing first)."""
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        while self.ws.state is not State.OPEN:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 5)
            assert data, "closed during the handshake"
            self.ws.receive_data(data)
            self.frames += [e for e in self.ws.events_received() if isinstance(e, Frame)]

    async def text(self, timeout: float = 5.0) -> dict[str, object]:
        while True:
            frame = await self.frame(timeout)
            if frame.opcode is Opcode.TEXT:
                result: dict[str, object] = json.loads(bytes(frame.data))
                return result

    async def to_eof(self) -> bool:
        """Read (and drop) frames until the server's EOF; True once it came."""
        while True:
            try:
                await self.frame()
            except ConnectionError:
                return True

    def close(self) -> None:
        self.sock.close()


# --- the upgrade ---------------------------------------------------------------------------


def http_exchange(port: int, request: str) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request; the status, headers and body of the answer, read to the EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


async def test_refusals_keep_their_status_body_and_retry_after(make_server: ServerFactory) -> None:
    node = make_server("--max-connections", "1", "--allowed-origins", "https://ok.example")
    bad_user = f"GET /ws?user=no%20spaces HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}\r\n"
    assert http_exchange(node.port, bad_user)[::2] == (400, b"invalid user id\n")
    foreign = f"GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n{UPGRADE}{KEY}\r\n"
    status, headers, body = http_exchange(node.port, foreign)
    assert (status, body) == (403, b"origin not allowed: https://evil.example\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    no_key = f"GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n"
    assert http_exchange(node.port, no_key)[0] == 400  # websockets' own answer, then EOF
    async with connect(node.url, "first"):
        full = f"GET /ws?user=second HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}\r\n"
        status, headers, body = http_exchange(node.port, full)
        assert (status, body) == (503, b"connection limit reached on this node\n")
        assert int(headers["retry-after"]) >= 1
        chat = f"GET /ws/second HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}\r\n"
        assert http_exchange(node.port, chat)[0] == 503


async def test_a_token_refused_before_the_upgrade_is_401(make_server: ServerFactory) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    forged = f"GET /ws?token=forged HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}\r\n"
    status, _, body = http_exchange(node.port, forged)
    assert status == 401 and body.endswith(b"\n")
    chat = f"GET /ws/ann HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}\r\n"
    assert http_exchange(node.port, chat)[0] == 401


# --- library mode: other WebSocket routes get uvicorn's own protocol ----------------------


@pytest.fixture
async def library_app() -> AsyncIterator[tuple[int, uvicorn.Server]]:
    hub = Hub()
    app = FastAPI()
    app.include_router(hub.router)

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.send_text(await ws.receive_text())

    async with uvicorn_in_process(app, ws=WshubTransport) as server:
        yield server.config.port, server


async def test_a_library_apps_own_route_is_served_by_uvicorns_protocol(
    library_app: tuple[int, uvicorn.Server],
) -> None:
    port, server = library_app
    async with websockets.connect(f"ws://127.0.0.1:{port}/echo") as echo:
        await echo.send("hello")
        assert await echo.recv() == "hello"
        kinds: set[type] = {type(c) for c in server.server_state.connections}
        assert WebSocketsSansIOProtocol in kinds and WshubTransport not in kinds
        async with connect(f"ws://127.0.0.1:{port}", "ann") as client:
            assert client.welcome["user"] == "ann"
            ours = [c for c in server.server_state.connections if isinstance(c, WshubTransport)]
            assert len(ours) == 1 and ours[0].session is not None
            await client.join("lib")
            await client.publish("lib", {"n": 1})
            assert (await client.messages(1))[0]["data"] == {"n": 1}
        await echo.send("still here")
        assert await echo.recv() == "still here"


async def test_channel_checks_read_the_handshake_and_the_apps_overrides() -> None:
    _, app = build()  # tests/channel_app.py: checks with FastAPI dependencies

    async def everyone_is_alice() -> str:
        return "alice"

    app.dependency_overrides[current_user] = everyone_is_alice
    async with (
        uvicorn_in_process(app, ws=WshubTransport) as server,
        connect(f"ws://127.0.0.1:{server.config.port}") as anyone,
    ):
        assert (await anyone.join("orders:42"))["type"] == "joined"
        ours = [c for c in server.server_state.connections if isinstance(c, WshubTransport)]
        assert len(ours) == 1  # served by wshub's own transport, not through ASGI


# --- frames --------------------------------------------------------------------------------


async def test_frames_split_across_reads_and_coalesced_in_one(node: ServerProcess) -> None:
    client = RawClient(node.port, "/ws?user=split")
    try:
        assert (await client.text())["type"] == "welcome"
        client.ws.send_text(b'{"type":"join","channel":"split","id":1}')
        wire = b"".join(client.ws.data_to_send())
        for i in range(len(wire)):  # one byte per segment (no Nagle)
            client.sock.sendall(wire[i : i + 1])
            await asyncio.sleep(0.002)
        assert (await client.text())["type"] == "joined"
        for n in (2, 3):
            client.ws.send_text(f'{{"type":"presence","channel":"split","id":{n}}}'.encode())
        client.flush()  # two frames in one write
        assert [(await client.text())["id"] for _ in range(2)] == [2, 3]
    finally:
        client.close()


async def test_a_fragmented_message_with_a_ping_between_its_fragments(node: ServerProcess) -> None:
    client = RawClient(node.port, "/ws?user=frag")
    try:
        assert (await client.text())["type"] == "welcome"
        client.ws.send_text(b'{"type":"join",', fin=False)
        client.ws.send_ping(b"between")
        client.ws.send_continuation(b'"channel":"frag",', fin=False)
        client.ws.send_continuation(b'"id":7}', fin=True)
        client.flush()
        pong = await client.frame()
        assert (pong.opcode, pong.data) == (Opcode.PONG, b"between")
        joined = await client.text()
        assert (joined["type"], joined["channel"], joined["id"]) == ("joined", "frag", 7)
    finally:
        client.close()


async def test_server_pings_are_answered_and_the_connection_lives(node: ServerProcess) -> None:
    client = RawClient(node.port, "/ws?user=pinged")
    try:
        assert (await client.text())["type"] == "welcome"
        pings = 0
        while pings < 3:  # three keepalive rounds (0.3 s apart, 0.6 s to answer each)
            frame = await client.frame(timeout=3)
            pings += frame.opcode is Opcode.PING  # answered by client.frame()
        client.ws.send_text(b'{"type":"presence","channel":"alive","id":1}')
        client.flush()
        assert (await client.text())["id"] == 1
    finally:
        client.close()


async def test_a_peer_that_vanishes_is_cut_off_by_the_keepalive(node: ServerProcess) -> None:
    before = await connections(node)
    sock = socket.create_connection(("127.0.0.1", node.port))
    try:
        sock.sendall(f"GET /ws?user=gone HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}\r\n".encode())
        assert sock.recv(12) == b"HTTP/1.1 101"
        await until_connections(node, before + 1, timeout=5)
        # It never reads nor answers a ping: gone, as a frozen or unplugged peer.
        await until_connections(node, before, timeout=5)
    finally:
        sock.close()


async def test_a_peer_that_closes_tcp_without_a_close_frame_is_gone(node: ServerProcess) -> None:
    before = await connections(node)
    client = RawClient(node.port, "/ws?user=fin")
    try:
        assert (await client.text())["type"] == "welcome"
        await until_connections(node, before + 1, timeout=5)
        client.sock.shutdown(socket.SHUT_WR)  # FIN, and no close frame first
        await until_connections(node, before, timeout=5)
        assert await client.to_eof()  # and the server closed its side too
    finally:
        client.close()


async def test_a_close_handshake_from_either_side(node: ServerProcess) -> None:
    async with websockets.connect(f"{node.url}/ws?user=closer") as ws:
        await ws.recv()
        await ws.close(1000, "bye")
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    client = RawClient(node.port, "/ws/chatter")  # the chat closes on a binary frame
    try:
        await client.opened()
        client.ws.send_binary(b"\x00")
        client.flush()
        while (frame := await client.frame()).opcode is not Opcode.CLOSE:
            pass
        assert int.from_bytes(frame.data[:2]) == 1003
        with pytest.raises(ConnectionError):  # our close reply went out; then the EOF
            await client.frame()
    finally:
        client.close()


async def test_a_frame_over_the_hard_cap_is_1009(node: ServerProcess) -> None:
    async with websockets.connect(f"{node.url}/ws?user=big", max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (2 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_peer_that_stops_reading_is_dropped_with_4008(make_server: ServerFactory) -> None:
    node = make_server("--queue-bytes", "100000", "--ping-interval", "0")
    reader = RawClient(node.port, "/ws?user=sleepy", rcvbuf=4096)
    try:
        assert (await reader.text())["type"] == "welcome"
        reader.ws.send_text(b'{"type":"join","channel":"flood","id":1}')
        reader.flush()
        assert (await reader.text())["type"] == "joined"
        async with connect(node.url, "writer") as writer:
            for i in range(200):  # 4 MB for a reader that reads nothing
                await writer.send({"type": "publish", "channel": "flood",
                                   "data": {"i": i, "pad": "p" * 20_000}})  # fmt: skip
            await until_connections(node, 1, timeout=10)
        codes = []
        while True:  # now read it all: the frames that fitted, then the close frame
            try:
                frame = await reader.frame(timeout=5)
            except ConnectionError:
                break
            if frame.opcode is Opcode.CLOSE:
                codes.append(int.from_bytes(frame.data[:2]))
        assert codes == [4008]
    finally:
        reader.close()


# --- a client that is not ours: Node ws ---------------------------------------------------

NODE_CLIENT = """
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1]);
const seen = [];
ws.on('message', (data) => {
  const frame = JSON.parse(data);
  seen.push(frame.type);
  if (frame.type === 'welcome') ws.send(JSON.stringify({type: 'join', channel: 'node', id: 1}));
  if (frame.type === 'joined') ws.ping('p');
  if (frame.type === 'message') ws.close(1000, 'done');
});
ws.on('pong', () => ws.send(JSON.stringify({type: 'publish', channel: 'node', data: 1, id: 2})));
ws.on('close', (code) => { console.log(JSON.stringify({code, seen})); });
"""


@pytest.fixture(scope="module")
def node_ws() -> Path:
    if not (NODE_WS / "node_modules" / "ws").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed for the Node ws client"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_WS, check=True,
                       timeout=300)  # fmt: skip
    return NODE_WS / "node_modules"


async def test_node_ws_joins_pings_publishes_and_closes(node: ServerProcess, node_ws: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node", "-e", NODE_CLIENT, f"{node.url}/ws?user=nodejs",
        stdout=subprocess.PIPE, env={"NODE_PATH": str(node_ws), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    result = json.loads(out)
    assert result["code"] == 1000
    assert result["seen"][:2] == ["welcome", "joined"] and "message" in result["seen"]
