"""The client behind a proxy on wshub's own WebSocket paths (``--proxy-headers``,
``--forwarded-allow-ips``): real ``wshub serve`` nodes, whose connection log names the peer, a
library app under uvicorn with ``ws=WshubTransport``, and Debian's nginx with the configuration
of docs/deploy.md. Clients are the `websockets` library's, sending their own
``X-Forwarded-For`` where the test plays the proxy."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from fastapi import FastAPI, WebSocket
from websockets.exceptions import InvalidStatus

from tests.conftest import ServerFactory
from tests.sse_support import sse
from tests.support import ServerProcess, connect, free_port, uvicorn_in_process
from tests.test_deploy import documented_config, nginx, render
from wshub import Hub
from wshub.transport.owned import WshubTransport

LOGS = {"WSHUB_LOG_LEVEL": "info", "WSHUB_LOG_FORMAT": "json"}
CLIENT = "203.0.113.9"  # a documentation address: never this machine's


async def logged(node: ServerProcess, event: str, timeout: float = 5.0, **fields: str) -> str:
    """The peer in the node's first ``event`` log line with ``fields``, once it is written."""
    deadline = time.monotonic() + timeout
    while True:
        for line in node.log().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event and fields.items() <= record.items():
                    return str(record["peer"])
        assert time.monotonic() < deadline, f"no {event} line with {fields}:\n{node.log()}"
        await asyncio.sleep(0.05)


async def logged_peer(node: ServerProcess, user: str) -> str:
    """The peer of ``user``'s connection in the node's "open" log line."""
    return await logged(node, "open", user=user)


async def peer_seen(node: ServerProcess, user: str, forwarded_for: str) -> tuple[str, str]:
    """What the node logged as ``user``'s peer, and the client socket's own address."""
    headers = {"X-Forwarded-For": forwarded_for}
    async with connect(node.url, user, additional_headers=headers) as client:
        host, port = client.ws.local_address[:2]
        return await logged_peer(node, user), f"{host}:{port}"


async def test_a_trusted_proxys_client_address_is_the_peer(make_server: ServerFactory) -> None:
    # The default trusts 127.0.0.1 and ::1; uvicorn's own variable is not wshub's setting.
    node = make_server(**LOGS, FORWARDED_ALLOW_IPS="10.0.0.1")
    peer, _ = await peer_seen(node, "behind", CLIENT)
    assert peer == f"{CLIENT}:0"  # X-Forwarded-For carries no port
    # Two hops: the rightmost address that is not a trusted proxy is the client.
    peer, _ = await peer_seen(node, "two-hops", f"{CLIENT}, 198.51.100.7, 127.0.0.1")
    assert peer == "198.51.100.7:0"


async def test_a_refusal_and_an_event_stream_log_the_forwarded_client_too(
    make_server: ServerFactory,
) -> None:
    node = make_server(**LOGS)
    forwarded = {"X-Forwarded-For": CLIENT}
    bad_user = f"ws://127.0.0.1:{node.port}/ws?user=no%20spaces"
    with pytest.raises(InvalidStatus):
        async with websockets.connect(bad_user, additional_headers=forwarded):
            pass
    assert await logged(node, "refused", reason="invalid user id") == f"{CLIENT}:0"
    async with sse(node.http, "news", headers=forwarded, user="streamer") as stream:
        await stream.until("joined")
        assert await logged_peer(node, "streamer") == f"{CLIENT}:0"  # through ASGI, as before


async def test_an_untrusted_peers_forwarded_for_is_ignored(make_server: ServerFactory) -> None:
    node = make_server("--forwarded-allow-ips", "10.0.0.1", **LOGS)
    peer, socket_address = await peer_seen(node, "spoofer", CLIENT)
    assert peer == socket_address


async def test_no_proxy_headers_keeps_the_socket_address(make_server: ServerFactory) -> None:
    node = make_server("--no-proxy-headers", "--forwarded-allow-ips", "*", **LOGS)
    peer, socket_address = await peer_seen(node, "direct", CLIENT)
    assert peer == socket_address


# --- library mode: what a channel check reads ----------------------------------------------


@pytest.fixture
async def library() -> AsyncIterator[tuple[int, dict[str, tuple[str, str]]]]:
    """A FastAPI app with a hub under uvicorn with wshub's transport; ``seen`` has, per room,
    the client host and URL scheme its channel check read from the handshake."""
    hub = Hub()
    seen: dict[str, tuple[str, str]] = {}
    rooms = hub.channel("room:{name}")

    @rooms.can_join
    async def anyone(name: str, websocket: WebSocket) -> bool:
        assert websocket.client is not None
        seen[name] = (websocket.client.host, websocket.url.scheme)
        return True

    app = FastAPI()
    app.include_router(hub.router)
    async with uvicorn_in_process(
        app, ws=WshubTransport, forwarded_allow_ips="127.0.0.1"
    ) as server:
        yield server.config.port, seen


async def join_through(port: int, room: str, headers: dict[str, str]) -> None:
    async with connect(f"ws://127.0.0.1:{port}", "ann", additional_headers=headers) as client:
        assert (await client.join(f"room:{room}"))["type"] == "joined"


async def test_a_channel_check_reads_the_forwarded_client_and_scheme(
    library: tuple[int, dict[str, tuple[str, str]]],
) -> None:
    port, seen = library
    forwarded: dict[str, Any] = {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"}
    await join_through(port, "proxied", forwarded)
    await join_through(port, "direct", {})
    assert seen == {"proxied": (CLIENT, "wss"), "direct": ("127.0.0.1", "ws")}


# --- through nginx -------------------------------------------------------------------------


@pytest.mark.slow  # real nginx
async def test_nginx_passes_the_real_client_address_through(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    node = make_server(**LOGS)
    site = render(documented_config(), node.port, node.port, free_port())
    with nginx(site, tmp_path) as port:
        # The client on a loopback address of its own: nginx connects from 127.0.0.1, so
        # only X-Forwarded-For can tell the node it was 127.0.0.2.
        async with connect(f"ws://127.0.0.1:{port}", "far", local_addr=("127.0.0.2", 0)):
            assert await logged_peer(node, "far") == "127.0.0.2:0"
