"""The command line: help text with defaults, environment variables, bad values."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from wshub.cli import app

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
    "--jwt-secret": "(none: open mode)",
    "--jwt-public-key": "(none: open mode)",
    "--allowed-origins": "(any origin)",
    "--api-key": "(none: API off)",
    "--log-level": "info",
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
    proc = subprocess.run(
        [sys.executable, "-m", "wshub", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert proc.returncode != 0
    assert message in proc.stderr
