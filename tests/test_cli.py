"""The command line: help text with defaults, environment variables, bad values."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.support import ServerProcess, connect, free_port, serve_refused
from wshub.cli.main import app

FLAGS = {
    "--host": "127.0.0.1",
    "--port": "8000",
    "--broker": "memory://",
    "--max-connections": "10000",
    "--max-connections-per-user": "0",
    "--max-frame-bytes": "65536",
    "--rate-limit": "0",
    "--max-channels": "128",
    "--queue-size": "1024",
    "--history-size": "100",
    "--history-ttl": "300",
    "--ping-interval": "20",
    "--ping-timeout": "20",
    "--presence-ttl": "30",
    "--broker-timeout": "10",
    "--jwt-secret": "(none: open mode)",
    "--jwt-public-key": "(none: open mode)",
    "--allowed-origins": "(any origin)",
    "--api-key": "(none: API off)",
    "--drain-seconds": "10",
    "--shutdown-grace": "15",
    "--fast-path": "fast-path",
    "--log-level": "info",
    "--log-format": "text",
}


def test_serve_help_lists_every_flag_with_default_and_variable() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for flag, default in FLAGS.items():
        assert flag in text
        env = "WSHUB_" + flag[2:].upper().replace("-", "_")
        assert f"env var: {env}" in text
        assert f"default: {default}" in text


def test_top_level_help() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue-size", "0"], "queue_size"),
        (["--max-connections", "-1"], "max_connections"),
        (["--broker", "carrier-pigeon://x"], "unknown broker"),
    ],
)
def test_invalid_values_fail_at_start_naming_the_setting(args: list[str], message: str) -> None:
    assert message in serve_refused(*args).stderr


def test_serve_help_lists_the_api_key_without_showing_it() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert "--api-key" in text
    assert "env var: WSHUB_API_KEY" in text


def _wshub(*args: str) -> list[str]:
    return [sys.executable, "-m", "wshub", *args]


async def test_listen_prints_what_publish_sends(server: ServerProcess) -> None:
    listener = await asyncio.create_subprocess_exec(
        *_wshub("listen", "cli:news", "--url", server.url, "--user", "ears", "--count", "2"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with connect(server.url, "watcher") as watcher:
            for _ in range(200):  # until the listener has joined
                reply = await watcher.request({"type": "presence", "channel": "cli:news"})
                if any(m["user"] == "ears" for m in reply["members"]):
                    break
                await asyncio.sleep(0.05)
        published = []
        for data in ('{"headline": "wshub ships"}', "plain words"):
            flags = ["--text"] if data == "plain words" else []
            proc = await asyncio.create_subprocess_exec(
                *_wshub(
                    "publish", "cli:news", data, "--url", server.http, "--user", "desk", *flags
                ),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0
            published.append(json.loads(out))
        assert [p["channel"] for p in published] == ["cli:news", "cli:news"]
        assert published[1]["offset"] == published[0]["offset"] + 1
        out, err = await asyncio.wait_for(listener.communicate(), 30)
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()
    assert listener.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [(m["data"], m["from"], m["offset"]) for m in lines] == [
        ({"headline": "wshub ships"}, "desk", published[0]["offset"]),
        ("plain words", "desk", published[1]["offset"]),
    ]


def test_publish_to_no_server_fails_with_a_message() -> None:
    proc = subprocess.run(
        _wshub("publish", "cli:x", "1", "--url", f"ws://127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr
