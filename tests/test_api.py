"""The HTTP API against a real ``wshub serve --api-key`` process: every route, 401, 422, fuzz."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ServerProcess, connect

KEY = "k3y-for-tests"
AUTH = {"Authorization": f"apikey {KEY}"}


@pytest.fixture(scope="module")
def api_server() -> Iterator[ServerProcess]:
    proc = ServerProcess(env={"WSHUB_API_KEY": KEY}).start()
    yield proc
    proc.stop()


@pytest.fixture
async def api(api_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_server.http, headers=AUTH, timeout=10) as client:
        yield client


def fields_named(reply: httpx.Response) -> list[list[Any]]:
    assert reply.status_code == 422, reply.text
    return [err["loc"] for err in reply.json()["detail"]]


ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/publish", {"channel": "news:x", "data": 1}),
    ("POST", "/api/send", {"to": "alice", "data": 1}),
    ("GET", "/api/channels", None),
    ("GET", "/api/channels/news:x/presence", None),
    ("GET", "/api/channels/news:x/history", None),
    ("POST", "/api/disconnect", {"user": "nobody"}),
    ("POST", "/api/subscribe", {"user": "nobody", "channel": "a"}),
    ("POST", "/api/unsubscribe", {"user": "nobody", "channel": "a"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    "header",
    [None, "apikey wrong", f"Bearer {KEY}", f"apikey {KEY}x", KEY, f"apikey  {KEY}"],
)
async def test_every_route_answers_401_without_the_key(
    api_server: ServerProcess, method: str, path: str, body: Any, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with httpx.AsyncClient(base_url=api_server.http) as client:
        # An invalid body does not matter: the key is checked first.
        reply = await client.request(method, path, headers=headers, content=b"{not json")
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "apikey"


async def test_the_api_is_off_without_a_key(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.http, headers=AUTH) as client:
        for method, path, body in ROUTES:
            assert (await client.request(method, path, json=body)).status_code == 404


async def test_publish_reaches_subscribers_from_null(
    api_server: ServerProcess, api: httpx.AsyncClient
) -> None:
    async with connect(api_server.url, "reader") as reader:
        await reader.join("news:pub")
        reply = await api.post("/api/publish", json={"channel": "news:pub", "data": {"a": [1]}})
        assert reply.status_code == 200
        (msg,) = await reader.messages(1)
        assert reply.json() == {"offset": 1, "epoch": msg["epoch"]}
        assert (msg["from"], msg["data"], msg["offset"]) == (None, {"a": [1]}, 1)
        big = await api.post("/api/publish", json={"channel": "news:pub", "data": 2**80})
        assert big.json() == {"offset": 2, "epoch": msg["epoch"]}
        assert (await reader.messages(1))[0]["data"] == 2**80


async def test_publish_with_an_idempotency_key_is_made_once(
    api_server: ServerProcess, api: httpx.AsyncClient
) -> None:
    async with connect(api_server.url, "reader") as reader:
        await reader.join("news:idem")
        body = {"channel": "news:idem", "data": "once", "idempotency_key": "order-7/é"}
        first = await api.post("/api/publish", json=body)
        again = await api.post("/api/publish", json={**body, "data": "twice?"})
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        other = await api.post("/api/publish", json={**body, "channel": "news:idem2"})
        assert other.json()["offset"] == 1  # a key belongs to one channel
        after = await api.post("/api/publish", json={"channel": "news:idem", "data": "next"})
        assert after.json()["offset"] == first.json()["offset"] + 1
        got = await reader.messages(2)
        assert [m["data"] for m in got] == ["once", "next"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": 1}, ["body", "channel"]),
        ({"channel": "a b", "data": 1}, ["body", "channel"]),
        ({"channel": "x" * 129, "data": 1}, ["body", "channel"]),
        ({"channel": "a\n", "data": 1}, ["body", "channel"]),
        ({"channel": "a\u0000b", "data": 1}, ["body", "channel"]),
        ({"channel": 7, "data": 1}, ["body", "channel"]),
        ({"channel": "a"}, ["body", "data"]),
        ({"channel": "a", "data": 1, "extra": 1}, ["body", "extra"]),
        ({"channel": "a", "data": 1, "idempotency_key": ""}, ["body", "idempotency_key"]),
        ({"channel": "a", "data": 1, "idempotency_key": "k" * 65}, ["body", "idempotency_key"]),
        ({"channel": "a", "data": 1, "idempotency_key": 7}, ["body", "idempotency_key"]),
        ([1, 2], ["body"]),
    ],
)
async def test_publish_422_names_the_field(
    api: httpx.AsyncClient, body: Any, field: list[Any]
) -> None:
    assert field in fields_named(await api.post("/api/publish", json=body))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"channel": "a", "data": NaN}',
        b'{"channel": "a", "data": 1e400}',
        b'{"channel": "a", "data": ' + b"9" * 5000 + b"}",
        b'{"channel": "a", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"channel": "a", "data": ' + b"[" * 500 + b"]" * 500 + b"}",
        b'{"channel": "\xff\xfe", "data": 1}',
        b"{not json",
    ],
)
async def test_publish_422_for_bodies_that_are_not_json(api: httpx.AsyncClient, raw: bytes) -> None:
    reply = await api.post(
        "/api/publish", content=raw, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 422, reply.text


async def test_send_reaches_every_connection_of_the_user(
    api_server: ServerProcess, api: httpx.AsyncClient
) -> None:
    async with connect(api_server.url, "dora") as one, connect(api_server.url, "dora") as two:
        reply = await api.post("/api/send", json={"to": "dora", "data": "ping"})
        assert reply.status_code == 204
        for c in (one, two):
            direct = await c.expect("direct")
            assert (direct["from"], direct["data"]) == (None, "ping")
    assert (await api.post("/api/send", json={"to": "nobody-here", "data": 1})).status_code == 204
    assert ["body", "to"] in fields_named(
        await api.post("/api/send", json={"to": "a b", "data": 1})
    )
    assert ["body", "data"] in fields_named(await api.post("/api/send", json={"to": "dora"}))


async def test_channels_and_presence(api_server: ServerProcess, api: httpx.AsyncClient) -> None:
    async with connect(api_server.url, "eli") as eli, connect(api_server.url, "fay") as fay:
        await eli.join("room:cp", meta={"name": "Eli"})
        await fay.join("room:cp")
        await fay.join("room:other")
        listed = (await api.get("/api/channels")).json()["channels"]
        assert {"channel": "room:cp", "subscribers": 2} in listed
        assert {"channel": "room:other", "subscribers": 1} in listed
        assert [c["channel"] for c in listed] == sorted(c["channel"] for c in listed)
        presence = (await api.get("/api/channels/room:cp/presence")).json()
        members = {m["user"]: m for m in presence["members"]}
        assert presence["channel"] == "room:cp"
        assert members["eli"] == {"user": "eli", "meta": {"name": "Eli"}, "connections": 1}
        assert members["fay"]["meta"] is None
    empty = (await api.get("/api/channels/room:nobody/presence")).json()
    assert empty == {"channel": "room:nobody", "members": []}
    assert ["path", "channel"] in fields_named(
        await api.get(f"/api/channels/{quote('a b')}/presence")
    )
    too_long = "x" * 129
    assert ["path", "channel"] in fields_named(await api.get(f"/api/channels/{too_long}/presence"))


async def test_history_pages_with_since_and_epoch(api: httpx.AsyncClient) -> None:
    for n in range(5):
        await api.post("/api/publish", json={"channel": "log:h", "data": n})
    last = (await api.get("/api/channels/log:h/history", params={"limit": 2})).json()
    assert [m["data"] for m in last["messages"]] == [3, 4]
    assert last["messages"][0]["type"] == "message"
    epoch = last["epoch"]
    page = await api.get(
        "/api/channels/log:h/history", params={"since": 1, "epoch": epoch, "limit": 2}
    )
    assert [m["offset"] for m in page.json()["messages"]] == [2, 3]
    void = (
        await api.get("/api/channels/log:h/history", params={"since": 1, "epoch": "old"})
    ).json()
    assert void["epoch"] == epoch  # a different epoch: the last messages, and the current epoch
    assert [m["offset"] for m in void["messages"]] == [1, 2, 3, 4, 5]
    for params, field in [
        ({"since": 1}, ["query", "epoch"]),
        ({"epoch": epoch}, ["query", "since"]),
        ({"since": -1, "epoch": epoch}, ["query", "since"]),
        ({"since": 2**64, "epoch": epoch}, ["query", "since"]),
        ({"since": "x", "epoch": epoch}, ["query", "since"]),
        ({"limit": -1}, ["query", "limit"]),
        ({"limit": "many"}, ["query", "limit"]),
    ]:
        reply = await api.get("/api/channels/log:h/history", params=params)
        assert field in fields_named(reply), params


async def test_disconnect_closes_every_connection_of_the_user_with_1008(
    api_server: ServerProcess, api: httpx.AsyncClient
) -> None:
    async with (
        connect(api_server.url, "gus") as gus,
        connect(api_server.url, "gus") as gus2,
        connect(api_server.url, "hal") as hal,
    ):
        assert (await api.post("/api/disconnect", json={"user": "gus"})).status_code == 204
        for c in (gus, gus2):
            with pytest.raises(websockets.ConnectionClosed) as info:
                await c.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1008
        assert (await hal.request({"type": "ping"}))["type"] == "pong"
    assert ["body", "user"] in fields_named(await api.post("/api/disconnect", json={"user": ""}))
    assert ["body", "user"] in fields_named(await api.post("/api/disconnect", json={}))


# --- fuzzed bodies: 422 or success, never anything else ---------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
names = st.text(max_size=140) | st.sampled_from(["chat:lobby", "alice", "a" * 128, "x\n"])


def bodies(*fields: str) -> st.SearchStrategy[bytes]:
    objects = st.fixed_dictionaries(
        {}, optional={f: names | json_values for f in fields} | {"extra": json_values}
    )
    return (
        (objects | json_values).map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
        | st.text(max_size=64).map(str.encode)
    )


FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    ("path", "fields", "ok"),
    [
        ("/api/publish", ("channel", "data", "idempotency_key"), 200),
        ("/api/send", ("to", "data"), 204),
        ("/api/disconnect", ("user",), 204),
        ("/api/subscribe", ("user", "channel"), 204),
        ("/api/unsubscribe", ("user", "channel"), 204),
    ],
)
def test_fuzzed_bodies_get_422_or_success(
    api_server: ServerProcess, path: str, fields: tuple[str, ...], ok: int
) -> None:
    with httpx.Client(base_url=api_server.http, headers=AUTH, timeout=10) as client:

        @FUZZ
        @given(body=bodies(*fields))
        def check(body: bytes) -> None:
            reply = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert reply.status_code in (ok, 422), (body, reply.status_code, reply.text)

        check()


def test_fuzzed_channel_paths_and_queries_get_422_or_success(api_server: ServerProcess) -> None:
    channel = st.text(min_size=1, max_size=140).filter(
        lambda c: "/" not in c and c not in {".", ".."}
    )
    query = st.dictionaries(
        st.sampled_from(["since", "epoch", "limit"]),
        st.integers().map(str) | st.text(max_size=20),
    )
    with httpx.Client(base_url=api_server.http, headers=AUTH, timeout=10) as client:

        @FUZZ
        @given(channel=channel, params=query, route=st.sampled_from(["presence", "history"]))
        def check(channel: str, params: dict[str, str], route: str) -> None:
            reply = client.get(f"/api/channels/{quote(channel, safe='')}/{route}", params=params)
            assert reply.status_code in (200, 422), (channel, params, reply.text)

        check()
