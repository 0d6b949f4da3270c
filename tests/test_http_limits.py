"""HTTP limits before any route sees a request, over raw sockets (a library would refuse to
send such requests, or hide how the server answered them)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Iterator

import pytest

from tests.support import ServerProcess, connect, http_get

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\n"
)
ROUTES = ["/healthz", "/ws"]


@pytest.fixture(scope="module")
def node() -> Iterator[ServerProcess]:
    proc = ServerProcess("--request-timeout", "1.5").start()
    yield proc
    proc.stop()


async def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send ``data``, then read until the server closes; its status and everything it sent.

    Fails if the server does not close within ``timeout`` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout)  # until EOF
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


def request(path: str, headers: bytes = b"") -> bytes:
    upgrade = UPGRADE if path.startswith("/ws") else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + upgrade + headers


@pytest.mark.parametrize("path", ROUTES)
async def test_a_request_line_over_8_kib_is_answered_414_and_closed(
    node: ServerProcess, path: str
) -> None:
    status, answer = await exchange(node.port, request(path + "?" + "a" * 9000) + b"\r\n")
    assert status == 414, answer
    assert b"connection: close" in answer


@pytest.mark.parametrize("path", ROUTES)
async def test_a_header_line_over_8_kib_is_answered_431_and_closed(
    node: ServerProcess, path: str
) -> None:
    status, answer = await exchange(
        node.port, request(path, b"X-Big: " + b"a" * 9000 + b"\r\n\r\n")
    )
    assert status == 431, answer


@pytest.mark.parametrize("path", ROUTES)
async def test_more_than_100_headers_are_answered_431(node: ServerProcess, path: str) -> None:
    headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(101)) + b"\r\n"
    status, answer = await exchange(node.port, request(path, headers))
    assert status == 431, answer


@pytest.mark.parametrize("path", ROUTES)
async def test_headers_under_every_limit_are_served(node: ServerProcess, path: str) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 300) for i in range(60)) + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(request(path + "?" + "a" * 8000, headers))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 101" if path == "/ws" else b"HTTP/1.1 200"), head


async def test_a_25_mb_header_is_refused_after_32_kib_not_buffered(node: ServerProcess) -> None:
    """The header never ends: the answer must come while the client is still sending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    sent = 0
    writer.write(request("/healthz", b"X-Big: "))
    chunk = b"a" * 65536
    answer = b""
    try:
        while sent < 25 * 2**20:
            writer.write(chunk)
            sent += len(chunk)
            try:
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(1024), 0.01)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            break
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert sent < 2 * 2**20, f"still sending after {sent} bytes"
    assert answer.startswith(b"HTTP/1.1 431"), answer


async def test_a_websocket_upgrade_with_a_body_is_answered_400(node: ServerProcess) -> None:
    data = b"PUT /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" + UPGRADE + b"Content-Length: 5\r\n\r\nhello"
    status, answer = await exchange(node.port, data)
    assert status == 400, answer


async def test_a_socket_that_sends_nothing_is_closed_after_the_request_timeout(
    node: ServerProcess,
) -> None:
    started = time.monotonic()
    status, answer = await exchange(node.port, b"", timeout=10)
    assert (status, answer) == (0, b"")
    assert time.monotonic() - started >= 1.4  # not before its time: --request-timeout 1.5


async def test_a_slowloris_request_gets_408_within_the_request_timeout(
    node: ServerProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    started = time.monotonic()
    answer = b""
    try:
        for byte in request("/healthz", b"X-Slow: " + b"a" * 100):
            writer.write(bytes([byte]))
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(1024), 0.1)
            if answer or time.monotonic() - started > 10:
                break
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 5


async def test_keep_alive_requests_still_work(node: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_pinned_sockets_cannot_starve_real_clients_under_a_low_fd_limit() -> None:
    """With ``ulimit -n 512``, 600 sockets that never send a request: the node keeps at most
    half its descriptors for them, closing the oldest, and real clients are served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        proc = ServerProcess().start()  # inherits the limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    pinned: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(600):
            pinned.append(await asyncio.open_connection("127.0.0.1", proc.port))
        status, _ = await asyncio.wait_for(http_get(f"{proc.http}/healthz"), 10)
        assert status == 200
        async with connect(proc.url, "real") as client:
            assert (await client.request({"type": "ping", "id": 1}))["type"] == "pong"
        # The oldest were closed to make room: they read EOF, long before the request timeout.
        first = pinned[:300]
        eofs = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in first)), 5)
        assert eofs == [b""] * len(first)
    finally:
        for _, writer in pinned:
            writer.close()
        proc.stop()
