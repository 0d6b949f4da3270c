"""A Redis broker reached over a Unix socket (``unix:///path``, docs/configuration.md) links
nodes as one over TCP does. A real redis-server listening on a socket only."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_hub import Peer
from wshub import Hub


@pytest.fixture
def redis_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(path), "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)


async def test_two_nodes_on_a_unix_socket_share_a_channel(redis_socket: Path) -> None:
    url = f"unix://{redis_socket}"
    one, two = Hub(url), Hub(url)
    await one.start()
    await two.start()
    try:
        a = Peer(one, "a")
        assert (await a.say({"type": "join", "channel": "c"}))["type"] == "joined"
        await two.publish("c", "over the socket")
        async with asyncio.timeout(5):
            while not a.link.of_type("message"):
                await asyncio.sleep(0.01)
        assert [m["data"] for m in a.link.of_type("message")] == ["over the socket"]
    finally:
        await one.stop()
        await two.stop()
