"""`wshub bench` against a server with auth: a token for all, or one minted per user."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ServerFactory
from tests.test_bench import bench
from wshub.bench.dialect import WSHUB
from wshub.bench.workers import with_auth
from wshub.core.auth import mint_token

SECRET = "b" * 40


def test_the_token_goes_in_the_auth_frame() -> None:
    first, *rest = with_auth(WSHUB.join, "a.b.c")
    sent = json.loads(first.send.format(channel="c", user="u", index="0"))
    assert sent == {"type": "auth", "id": "auth", "token": "a.b.c"} and not first.expect
    assert tuple(rest) == WSHUB.join  # then welcome, as without auth
    assert with_auth(WSHUB.join, "") == WSHUB.join


@pytest.mark.parametrize("how", ["jwt-secret", "token"])
def test_bench_loads_a_server_with_auth(make_server: ServerFactory, how: str) -> None:
    node = make_server("--jwt-secret", SECRET)
    if how == "jwt-secret":
        credentials = ["--jwt-secret", SECRET]
    else:
        credentials = ["--token", mint_token(SECRET, "loader", ["bench-*"], ["bench-*"])]
    done = bench(
        node.url, "--receivers", "6", "--rate", "20", "--duration", "0.5", "--json", *credentials
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["connected"] == 6 and result["errors"] == 0
    assert result["delivered"] == result["expected"] > 0


def test_bench_without_credentials_is_refused_with_the_reason(make_server: ServerFactory) -> None:
    # No token: the upgrade waits for an auth frame the bench does not send, then 4003.
    node = make_server("--jwt-secret", SECRET, "--auth-timeout", "0.5")
    done = bench(node.url, "--receivers", "2", "--duration", "0.5", "--json")
    assert done.returncode == 1
    assert "4003" in done.stderr or "4003" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_wrong_secret_fails_every_connection(make_server: ServerFactory) -> None:
    node = make_server("--jwt-secret", SECRET)
    done = bench(node.url, "--receivers", "2", "--duration", "0.5", "--jwt-secret", "w" * 40)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
