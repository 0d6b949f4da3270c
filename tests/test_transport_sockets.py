"""The transport's limits over real sockets against real ``wshub serve`` processes.

Raw sockets, because a library client would hide what is tested: it reads in the background,
answers nothing it is not asked, and never sends a malformed handshake.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.uri import parse_uri

from tests.conftest import ServerFactory
from tests.support import ServerProcess, connect, http_get

SECRET = "s" * 40


def raw(node: ServerProcess, rcvbuf: int = 4096) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # a small window: a reader
    sock.connect(("127.0.0.1", node.port))  # that stops reading is felt at once
    return sock


def answer(sock: socket.socket, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes: (bytes, closed within ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    return data, True


def upgrade(node: ServerProcess, user: str) -> tuple[socket.socket, ClientProtocol]:
    """A raw WebSocket connection: the handshake done, nothing read after it."""
    sock = raw(node)
    client = ClientProtocol(parse_uri(f"{node.url}/ws?user={user}"))
    client.send_request(client.connect())
    sock.sendall(b"".join(client.data_to_send()))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    client.receive_data(head)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, client


# --- refused handshakes --------------------------------------------------------------------

UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (f"GET /ws?user={'a' * 9000} HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}\r\n", 414),
        (f"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 9000}\r\n{UPGRADE}{KEY}\r\n", 431),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n" + "X-N: 1\r\n" * 130 + f"{UPGRADE}{KEY}\r\n", 431),
        (f"GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}Content-Length: 5\r\n\r\nhello", 400),
        (f"PUT /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}Content-Length: 5\r\n\r\nhello", 400),
    ],
    ids=["long-request-line", "long-header", "too-many-headers", "body", "put-with-body"],
)
def test_a_refused_handshake_is_answered_and_closed_at_once(
    server: ServerProcess, request_: str, status: int
) -> None:
    with raw(server) as sock:
        sock.sendall(request_.encode())
        data, closed = answer(sock)
    assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:200]
    assert closed, "the socket must be closed with the answer"


async def test_a_normal_refusal_is_one_info_line_with_its_reason(
    make_server: ServerFactory,
) -> None:
    node = make_server("--log-level", "info", WSHUB_JWT_SECRET=SECRET)
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.TOKEN-NEVER-LOGGED"
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"{node.url}/ws?token={token}")
    assert refused.value.response.status_code == 401
    deadline = time.monotonic() + 5
    while "handshake refused" not in node.log():
        assert time.monotonic() < deadline, node.log()
        await asyncio.sleep(0.05)
    # The port is random and may contain "401": match the status field, not the digits.
    lines = [line for line in node.log().splitlines() if "status=401" in line or "refused" in line]
    assert len(lines) == 1, lines
    assert " INFO " in lines[0] and "status=401" in lines[0] and "reason=" in lines[0]
    assert "ERROR" not in node.log() and "TOKEN-NEVER-LOGGED" not in node.log()


# --- the byte budget -----------------------------------------------------------------------


async def connections(node: ServerProcess) -> int:
    status, body = await http_get(f"{node.http}/healthz")
    assert status == 200
    return int(json.loads(body)["connections"])


async def test_replies_to_a_client_that_never_reads_are_bounded_in_bytes(
    make_server: ServerFactory,
) -> None:
    node = make_server("--queue-bytes", "1000000")
    async with connect(node.url, "writer") as writer:
        for i in range(20):  # 20 messages of 50 KB: a history reply of 1 MB
            await writer.publish("budget:big", {"i": i, "pad": "p" * 50_000})
    sock, client = upgrade(node, "greedy")
    with sock:
        for _ in range(10):  # 10 MB of replies asked for, none read
            client.send_text(b'{"type":"history","channel":"budget:big","limit":20}')
        sock.sendall(b"".join(client.data_to_send()))
        deadline = time.monotonic() + 10
        while await connections(node):  # cut off as a slow consumer (4008)
            assert time.monotonic() < deadline, "a client over its byte budget stays open"
            await asyncio.sleep(0.05)


def rss_kb(node: ServerProcess) -> int:
    assert node.proc is not None
    with open(f"/proc/{node.proc.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def test_a_client_that_pings_and_never_reads_does_not_grow_the_node(
    make_server: ServerFactory,
) -> None:
    node = make_server("--ping-interval", "0")
    sock, client = upgrade(node, "pinger")
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await asyncio.sleep(0.2)
        before = rss_kb(node)
        for _ in range(2000):
            client.send_ping(b"x" * 125)
        burst = b"".join(client.data_to_send())  # 262 KB of pings: 254 KB of pongs
        sock.setblocking(False)
        # Send until the node has taken nothing for 2 s (it stopped reading), or give up at
        # the deadline: a node that reads on takes megabytes a second and never goes quiet.
        total, pending = 0, memoryview(burst)
        deadline = time.monotonic() + 30
        last_taken = time.monotonic()
        while time.monotonic() - last_taken < 2:
            assert time.monotonic() < deadline, f"still reading after {total / 1e6:.1f} MB"
            try:
                n = sock.send(pending)
            except BlockingIOError:  # the node stopped reading: what it should do
                await asyncio.sleep(0.01)
                continue
            total += n
            last_taken = time.monotonic()
            pending = pending[n:] or memoryview(burst)
        grown = (rss_kb(node) - before) / 1024
    # What it took before it stopped is its buffers' worth, not the flood.
    assert total < 16e6, f"took {total / 1e6:.1f} MB of pings before it stopped reading"
    assert grown < 30, f"RSS grew {grown:.0f} MB after {total / 1e6:.0f} MB of pings"
