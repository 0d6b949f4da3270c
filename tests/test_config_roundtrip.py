"""`wshub config > wshub.toml` never gives a server that runs with masked secrets."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support import serve_refused

SECRETS = {
    "api_key": ("--api-key", "the-real-key"),
    "jwt_secret": ("--jwt-secret", "j" * 40),
    "broker": ("--broker", "redis://:hunter2@127.0.0.1:6390/0"),
}


def wshub_config(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "wshub", "config", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_masked_secret_read_back_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    flag, value = SECRETS[name]
    path = tmp_path / "wshub.toml"
    path.write_text(wshub_config(flag, value))
    text = path.read_text()
    assert value not in text and "***" in text and "masked" in text
    proc = serve_refused("--config", str(path))
    message = " ".join(proc.stderr.replace("│", " ").split())
    assert f"{name} holds '***'" in message and str(path) in message


def test_the_written_file_runs_once_the_secret_comes_from_its_variable(
    tmp_path: Path, make_server: ServerFactory
) -> None:
    path = tmp_path / "wshub.toml"
    path.write_text(wshub_config("--api-key", "the-real-key"))
    node = make_server("--config", str(path), WSHUB_API_KEY="the-real-key")
    for key, status in (("***", 401), ("the-real-key", 200)):
        request = urllib.request.Request(
            f"{node.http}/admin/stats", headers={"Authorization": f"apikey {key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                got = resp.status
        except urllib.error.HTTPError as err:
            got = err.code
        assert got == status
