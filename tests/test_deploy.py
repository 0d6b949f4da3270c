"""docs/deploy.md for real: Debian's nginx with the documented configuration, in front of two
wshub nodes on one Redis; one node drains while the other's clients stay connected."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.conftest import ServerFactory
from tests.support import ROOT, Client, RedisProcess, connect, free_port, http_get
from wshub.cli.options import read_toml, resolve

pytestmark = pytest.mark.slow  # real nginx and nodes

NGINX = os.environ.get("WSHUB_NGINX", "/usr/sbin/nginx")
DOC = ROOT / "docs" / "deploy.md"


def documented_config() -> str:
    match = re.search(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/deploy.md has an nginx block"
    return match[1]


def render(config: str, a: int, b: int, listen: int) -> str:
    """The documented block with the test's ports: the only change."""
    for old, new in (
        ("server 127.0.0.1:8001 ", f"server 127.0.0.1:{a} "),
        ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{b} "),
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
    ):
        assert old in config
        config = config.replace(old, new)
    return config


@contextlib.contextmanager
def nginx(site: str, prefix: Path) -> Iterator[int]:
    """Debian's nginx in the foreground with the site config, every path under ``prefix``."""
    if not Path(NGINX).exists():
        pytest.fail(f"{NGINX} is missing: `make system-deps` installs Debian's nginx")
    port = int(re.search(r"listen 127\.0\.0\.1:(\d+);", site)[1])  # type: ignore[index]
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx would switch its workers to `nobody`, who cannot enter pytest's tmp dir.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 512; }}\n"
        f"http {{\n    access_log {prefix}/access.log;\n{temp}\n{site}\n}}\n"
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
         str(prefix / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (prefix / "error.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_documented_config_keeps_its_promises() -> None:
    config = documented_config()
    assert "proxy_set_header Upgrade $http_upgrade;" in config
    assert "proxy_set_header Connection $connection_upgrade;" in config
    assert "proxy_http_version 1.1;" in config
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", config)[1])  # type: ignore[index]
    ping = resolve({})[0].ping_interval
    assert timeout > 2 * ping  # a ping, and a late one, arrive before nginx gives up
    assert len(re.findall(r"^\s+server 127\.0\.0\.1:\d+ ", config, re.M)) == 2
    # deploy/nginx.conf (compose) is the same configuration with the service names.
    compose = (ROOT / "deploy" / "nginx.conf").read_text()
    body = config.split("\n", 1)[1].replace(
        "    # Two nodes on one Redis: wshub serve --port 8001 --broker redis://127.0.0.1:6379/0\n",
        "",
    )
    body = body.replace("127.0.0.1:8001", "wshub-a:8000").replace("127.0.0.1:8002", "wshub-b:8000")
    assert compose.split("\n", 1)[1] == body
    # The systemd unit's settings file is valid.
    resolve({}, read_toml(ROOT / "deploy" / "wshub.toml"), "deploy/wshub.toml")


async def rejoin_through(
    stack: contextlib.AsyncExitStack, proxy: str, user: str, channel: str, since: dict[str, Any]
) -> Client:
    """Reconnect the way a client does after 1001: with backoff, then join with ``since``."""
    for attempt in range(20):
        try:
            client = await stack.enter_async_context(connect(proxy, user))
        except (OSError, InvalidHandshake):
            await asyncio.sleep(0.1 * (attempt + 1))
            continue
        joined = await client.join(channel, since=since)
        assert joined["recovered"] is True
        return client
    raise AssertionError("could not reconnect through nginx")


async def test_through_nginx_one_node_drains_while_the_other_keeps_its_clients(
    make_server: ServerFactory, redis: RedisProcess, tmp_path: Path
) -> None:
    a = make_server("--broker", redis.url, "--drain-seconds", "1")
    b = make_server("--broker", redis.url, "--drain-seconds", "1")
    site = render(documented_config(), a.port, b.port, free_port())
    with nginx(site, tmp_path) as port:
        proxy = f"ws://127.0.0.1:{port}"
        assert (await http_get(f"http://127.0.0.1:{port}/readyz"))[0] == 200
        channel = "deploy:room"
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(proxy, f"n{i}")) for i in range(8)]
            by_node: dict[str, list[Client]] = {}
            for client in clients:
                by_node.setdefault(client.welcome["server"]["node"], []).append(client)
                epoch = (await client.join(channel))["epoch"]
            assert len(by_node) == 2, "nginx spreads clients over both nodes"
            await clients[0].publish(channel, "before")
            for client in clients:
                assert [m["data"] for m in await client.messages(1)] == ["before"]
            # Which node is a? Its welcome names it; ask a directly.
            async with connect(a.url, "probe") as probe:
                node_a = probe.welcome["server"]["node"]
            on_a, on_b = by_node[node_a], next(v for k, v in by_node.items() if k != node_a)

            assert a.proc is not None
            a.proc.send_signal(signal.SIGTERM)
            moved = []
            for client in on_a:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await client.recv(10)
                assert client.ws.close_code == 1001
                since = {"offset": 1, "epoch": epoch}  # they saw "before", offset 1
                moved.append(
                    await rejoin_through(stack, proxy, client.welcome["user"], channel, since)
                )
            assert all(m.welcome["server"]["node"] != node_a for m in moved)
            assert await asyncio.to_thread(a.proc.wait, 15) == 0
            await on_b[0].publish(channel, "after")
            for client in on_b + moved:  # b's clients never left; a's came over
                assert [m["data"] for m in await client.messages(1)] == ["after"]
        log = (tmp_path / "access.log").read_text()
        assert " 101 " in log  # the upgrades went through nginx
