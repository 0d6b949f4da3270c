"""`wshub listen` and `wshub publish` as real processes against real servers: they stop when
the server says so, say why in one line, and never print a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import ServerFactory
from tests.proxy import TcpProxy
from tests.support import ServerProcess, connect, free_port
from wshub.core.auth import mint_token

SECRET = "s" * 40
KEY = "cli-api-key"


def wshub(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wshub", *args], capture_output=True, text=True, timeout=timeout
    )


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wshub",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def one_line_error(proc: subprocess.CompletedProcess[str] | tuple[int, str]) -> str:
    code, err = (proc.returncode, proc.stderr) if not isinstance(proc, tuple) else proc
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


async def until_member(node: ServerProcess, channel: str, user: str) -> None:
    async with connect(node.url, "watcher") as watcher:
        async with asyncio.timeout(20):
            while True:
                reply = await watcher.request({"type": "presence", "channel": channel})
                if any(m["user"] == user for m in reply["members"]):
                    return
                await asyncio.sleep(0.05)


async def finish(proc: asyncio.subprocess.Process, timeout: float = 20) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_listen_disconnected_through_the_api_stops_with_a_message(
    make_server: ServerFactory,
) -> None:
    node = make_server("--api-key", KEY)
    listener = await start("listen", "cli:stop", "--url", node.url, "--user", "gone")
    await until_member(node, "cli:stop", "gone")
    request = urllib.request.Request(
        f"{node.http}/api/disconnect",
        data=b'{"user": "gone"}',
        headers={"Authorization": f"apikey {KEY}", "Content-Type": "application/json"},
    )
    await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
    code, _, err = await finish(listener)
    line = one_line_error((code, err))
    assert "disconnected by the server" in line and "1008" in line
    # It is gone, not back: its user is in no channel any more.
    async with connect(node.url, "watcher") as watcher:
        reply = await watcher.request({"type": "presence", "channel": "cli:stop"})
        assert reply["members"] == []


async def test_listen_with_an_expiring_token_stops_saying_so(make_server: ServerFactory) -> None:
    node = make_server("--jwt-secret", SECRET)
    # Long enough for the CLI to start and connect on a loaded machine, then it expires.
    token = mint_token(SECRET, "tim", ["cli:*"], ttl=5)
    listener = await start("listen", "cli:exp", "--url", node.url, "--token", token)
    code, _, err = await finish(listener)
    line = one_line_error((code, err))
    assert "token expired" in line and "4001" in line and "no new token" in line


def test_listen_with_a_token_that_does_not_verify_says_why(make_server: ServerFactory) -> None:
    node = make_server("--jwt-secret", SECRET)
    forged = mint_token("f" * 40, "tim", ["cli:*"])
    line = one_line_error(wshub("listen", "cli:x", "--url", node.url, "--token", forged))
    assert "4003" in line and "signature" in line  # the token goes in the auth frame
    assert forged not in line


@pytest.mark.parametrize(
    ("channel", "expected"), [("secret:x", "forbidden"), ("bad channel", "bad_request")]
)
def test_listen_on_a_forbidden_or_invalid_channel_says_so(
    make_server: ServerFactory, channel: str, expected: str
) -> None:
    node = make_server("--jwt-secret", SECRET)
    token = mint_token(SECRET, "tim", ["cli:*"])
    line = one_line_error(wshub("listen", channel, "--url", node.url, "--token", token))
    assert expected in line and channel in line


@pytest.mark.parametrize(
    "args", [["listen", "cli:x"], ["publish", "cli:x", "1"], ["publish", "cli:x", "1", "--text"]]
)
def test_a_url_without_a_scheme_is_one_line(args: list[str]) -> None:
    proc = wshub(*args, "--url", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    assert "ws://" in one_line_error(proc)


def test_publish_over_the_size_limit_is_refused_at_once(make_server: ServerFactory) -> None:
    node = make_server("--max-frame-bytes", "1000")
    proc = wshub("publish", "cli:big", json.dumps("x" * 5000), "--url", node.url)
    line = one_line_error(proc)
    assert "too_large" in line and "frame over 1000 bytes" in line
    assert proc.returncode == 1


async def test_publish_of_invalid_json_is_an_error_and_text_is_a_flag(
    server: ServerProcess,
) -> None:
    proc = await asyncio.to_thread(wshub, "publish", "cli:json", '{"broken": ', "--url", server.url)
    assert proc.returncode == 2
    assert "not valid JSON" in one_line_error(proc) and "--text" in proc.stderr
    proc = await asyncio.to_thread(
        wshub, "publish", "cli:json", '{"broken": ', "--text", "--url", server.url
    )
    assert proc.returncode == 0, proc.stderr
    async with connect(server.url, "reader") as reader:
        reply = await reader.request({"type": "history", "channel": "cli:json"})
    assert [m["data"] for m in reply["messages"]] == ['{"broken": ']  # only the --text one


async def test_listen_refetches_history_when_a_restart_refuses_the_resume(
    make_server: ServerFactory,
) -> None:
    node = make_server()
    proxy = await TcpProxy(node.port).start()
    try:
        listener = await start(
            "listen", "cli:restart", "--url", proxy.url, "--user", "ears", "--count", "3"
        )
        assert listener.stdout is not None
        await until_member(node, "cli:restart", "ears")
        async with connect(node.url, "desk") as desk:
            await desk.publish("cli:restart", "before")
        first = json.loads(await asyncio.wait_for(listener.stdout.readline(), 20))
        # No way back in while the server restarts and two messages are published.
        proxy.freeze()
        proxy.cut()
        await asyncio.to_thread(node.restart)
        async with connect(node.url, "desk") as desk:
            await desk.publish("cli:restart", "while away 1")
            await desk.publish("cli:restart", "while away 2")
        proxy.thaw()
        code, out, err = await finish(listener)
    finally:
        await proxy.close()
    assert code == 0, err
    lines = [first, *(json.loads(line) for line in out.splitlines())]
    assert [m["data"] for m in lines] == ["before", "while away 1", "while away 2"]
    assert lines[1]["epoch"] != first["epoch"]
    assert "resume refused" in err and "refetching" in err
