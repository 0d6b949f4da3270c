"""One API-key check for ``/api`` and ``/admin/stats``: the same header forms pass and fail on
both, against a real ``wshub serve --api-key`` process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support import ServerProcess

KEY = "k3y-for-the-check"
UNICODE_KEY = "clé-secrète"
ROUTES = ["/api/channels", "/admin/stats"]

ACCEPTED = [f"apikey {KEY}", f"APIKEY {KEY}", f"ApiKey {KEY}"]
REFUSED = [
    None,
    "",
    "apikey",
    "apikey wrong",
    f"apikey {KEY}x",
    f"apikey {KEY[:-1]}",
    f"apikey  {KEY}",
    f"apikey\t{KEY}",
    f"apikey:{KEY}",
    f"Bearer {KEY}",
    f"Basic {KEY}",
    f"apikeys {KEY}",
    KEY,
]


@pytest.fixture(scope="module")
def keyed() -> Iterator[ServerProcess]:
    proc = ServerProcess(env={"WSHUB_API_KEY": KEY}).start()
    yield proc
    proc.stop()


def get(node: ServerProcess, path: str, header: str | bytes | None) -> httpx.Response:
    """GET with this ``Authorization`` value (bytes: sent as they are)."""
    value = header.encode("latin-1") if isinstance(header, str) else header
    headers = [] if value is None else [(b"Authorization", value)]
    return httpx.get(node.http + path, headers=headers, timeout=10)


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("header", ACCEPTED)
def test_the_key_passes_with_the_scheme_in_any_case(
    keyed: ServerProcess, path: str, header: str
) -> None:
    assert get(keyed, path, header).status_code == 200


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("header", REFUSED)
def test_any_other_form_gets_401_naming_the_header(
    keyed: ServerProcess, path: str, header: str | None
) -> None:
    reply = get(keyed, path, header)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "apikey"
    assert "Authorization: apikey KEY" in reply.json()["detail"]


def test_a_key_outside_ascii_passes_sent_as_utf8_on_both(make_server: ServerFactory) -> None:
    node = make_server(WSHUB_API_KEY=UNICODE_KEY)
    for path in ROUTES:
        assert get(node, path, b"apikey " + UNICODE_KEY.encode()).status_code == 200
        assert get(node, path, b"apikey " + UNICODE_KEY.encode("latin-1")).status_code == 401


def test_without_a_key_admin_stats_say_403_and_the_api_is_not_there(
    make_server: ServerFactory,
) -> None:
    node = make_server()
    reply = get(node, "/admin/stats", f"apikey {KEY}")
    assert reply.status_code == 403
    assert "--api-key" in reply.json()["detail"]
    assert get(node, "/api/channels", f"apikey {KEY}").status_code == 404
