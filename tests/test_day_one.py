"""What a new user meets in the first minutes: help text, --version, the start-up line,
Ctrl+C, a restart right away, and an API call made with plain `curl -d`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support import ServerProcess, connect
from wshub import __version__
from wshub.core.auth import mint_token


def wshub(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wshub", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "", "COLUMNS": str(columns)},
    )


@pytest.mark.parametrize("command", ["serve", "config", "listen", "publish", "token", "bench"])
def test_help_at_80_columns_cuts_no_word(command: str) -> None:
    proc = wshub(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())
    if command == "serve":
        assert "--max-connections-per-user" in proc.stdout


def test_version_flag() -> None:
    proc = wshub("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"wshub {__version__}")


async def test_ctrl_c_drains_at_once_says_how_to_force_and_the_port_is_free_again(
    make_server: ServerFactory,
) -> None:
    node = make_server("--drain-seconds", "30", "--jwt-secret", "j" * 40, WSHUB_LOG_LEVEL="info")
    token = mint_token("j" * 40, "dev")
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):  # a developer's few tabs
            await stack.enter_async_context(connect(node.url, token=token))
        assert node.proc is not None
        node.proc.send_signal(signal.SIGINT)
        # A few clients are closed together, not spread over the 30 s: well within them.
        code = await asyncio.wait_for(asyncio.to_thread(node.proc.wait), 15)
    assert code == 0
    log = node.log()
    lines = log.splitlines()
    (started,) = [line for line in lines if f"wshub {__version__} on http://" in line]
    assert f"http://127.0.0.1:{node.port}" in started
    assert "auth JWT" in started and "broker memory://" in started
    (draining,) = [line for line in lines if "SIGINT: draining" in line]
    assert "Ctrl+C again to exit at once" in draining
    assert " INFO " in draining
    assert not [line for line in lines if " WARNING " in line and "drain" in line], log
    # The same port, right away.
    again = ServerProcess(port=node.port).start()
    again.stop()


def test_an_api_call_without_a_json_content_type_says_how(make_server: ServerFactory) -> None:
    node = make_server("--api-key", "k" * 20)
    request = urllib.request.Request(  # what `curl -d '{...}'` sends
        f"{node.http}/api/publish",
        data=b'{"channel": "chat:a", "data": 1}',
        headers={
            "Authorization": "apikey " + "k" * 20,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 415
    assert "Content-Type: application/json" in json.loads(refused.value.read())["detail"]


def test_server_logs_stay_in_pytests_temporary_folder(server_logs: Path) -> None:
    assert ServerProcess().log_path.parent == server_logs
    assert server_logs.parent != Path(tempfile.gettempdir())
