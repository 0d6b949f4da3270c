"""Subscription tokens and server-side subscriptions, over real sockets on real ``wshub serve``
processes (two nodes on a real Redis for the HTTP API), with a client that is not ours
(docs/protocol.md "Subscription tokens", "Server-side subscriptions")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.identity_support import (
    SECRET,
    SIGNER,
    auth,
    error_code,
    still_usable,
    sub_token,
    token,
    unidentified,
    until_past,
)
from tests.support import Client, RedisProcess, ServerProcess, connect, serve_in_process
from wshub.core.tokens import Claims, Signer

KEY = "an-api-key-for-the-subscription-tests"
AUTH = {"Authorization": f"apikey {KEY}"}


@pytest.fixture(scope="module")
def node() -> Iterator[ServerProcess]:
    env = {"WSHUB_JWT_SECRET": SECRET, "WSHUB_API_KEY": KEY}
    proc = ServerProcess("--max-frame-bytes", "8192", env=env).start()
    yield proc
    proc.stop()


async def post(node: ServerProcess, path: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http, headers=AUTH, timeout=10) as api:
        return await api.post(path, json=body)


async def frames_until(client: Client, kind: str, **match: Any) -> list[dict[str, Any]]:
    """Every frame up to and including the first of ``kind`` matching ``match``."""
    got = []
    while True:
        frame = await client.recv(10)
        got.append(frame)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
            return got


# --- subscription tokens ---------------------------------------------------------------------


async def test_a_subscription_token_allows_a_join_beyond_the_patterns(node: ServerProcess) -> None:
    async with connect(node.url, token=token("ann", join=["chat:*"])) as ann:
        assert await error_code(ann, {"type": "join", "channel": "room:1"}) == "forbidden"
        joined = await ann.join("room:1", token=sub_token("ann", "room:1"))
        assert joined["channel"] == "room:1"
        presence = await ann.request({"type": "presence", "channel": "room:1"})
        assert [m["user"] for m in presence["members"]] == ["ann"]
        assert (await ann.request({"type": "history", "channel": "room:1"}))["type"] == "history"
        assert (await ann.request({"type": "leave", "channel": "room:1"}))["type"] == "left"
        # Left: the grant is spent.
        assert await error_code(ann, {"type": "join", "channel": "room:1"}) == "forbidden"


@pytest.mark.parametrize(
    ("jwt", "code", "why"),
    [
        (sub_token("bob", "room:1"), "forbidden", "another user"),
        (sub_token("ann", "room:2"), "forbidden", "another channel"),
        (token("ann", join=["*"]), "forbidden", 'no "channel" claim'),
        (Signer.from_secret("k" * 40).sign(Claims("ann", channel="room:1")), "forbidden", "sig"),
        (SIGNER.sign(Claims("ann", channel="room:1", ttl=1), time.time() - 60), "forbidden", "exp"),
        ("x" * 6000, "forbidden", "malformed"),  # a huge token
        (12, "bad_request", '"token"'),  # a token of the wrong type
    ],
    ids=["other-user", "other-channel", "not-a-sub", "bad-sig", "expired", "huge", "wrong-type"],
)
async def test_a_bad_subscription_token_gets_its_error_and_the_connection_goes_on(
    node: ServerProcess, jwt: Any, code: str, why: str
) -> None:
    async with connect(node.url, token=token("ann", join=["chat:*"])) as ann:
        reply = await ann.request({"type": "join", "channel": "room:1", "token": jwt})
        assert (reply["type"], reply["code"]) == ("error", code)
        assert why in reply["message"]
        # Even where the patterns allow the join, a bad token is refused, with its reason.
        chat = await ann.request({"type": "join", "channel": "chat:1", "token": jwt})
        assert chat["type"] == "error"
        assert (await ann.join("chat:1"))["type"] == "joined"
        await still_usable(ann)


async def test_at_its_exp_a_subscription_token_leaves_the_channel_while_messages_flow(
    node: ServerProcess,
) -> None:
    async with (
        connect(node.url, token=token("cat", join=["side:*"])) as cat,
        connect(node.url, token=token("dan", publish=["*"])) as dan,
    ):
        await cat.join("side:1")
        joined = await cat.join("room:exp", token=sub_token("cat", "room:exp", ttl=2))
        ends = time.time() + 2

        async def flow() -> int:
            sent = 0
            while time.time() < ends + 1:
                await dan.publish("room:exp", sent)
                sent += 1
                await asyncio.sleep(0.01)
            return sent

        sent = await flow()
        got = await frames_until(cat, "unsubscribed", channel="room:exp")
        assert got[-1] == {"type": "unsubscribed", "channel": "room:exp", "reason": "expired"}
        assert time.time() >= ends - 0.05
        offsets = [f["offset"] for f in got if f["type"] == "message"]
        assert offsets == list(range(joined["offset"] + 1, joined["offset"] + 1 + len(offsets)))
        assert 0 < len(offsets) < sent
        # After it, nothing more of room:exp: the next frame is side:1's marker.
        await dan.publish("room:exp", "after")
        await dan.publish("side:1", "marker")
        assert (await cat.recv())["data"] == "marker"
        assert await error_code(cat, {"type": "join", "channel": "room:exp"}) == "forbidden"


async def test_joining_again_with_a_fresh_token_first_keeps_the_channel(
    node: ServerProcess,
) -> None:
    async with connect(node.url, token=token("eli")) as eli:
        await eli.join("room:keep", token=sub_token("eli", "room:keep", ttl=2))
        first_end = time.time() + 2
        again = await eli.join("room:keep", token=sub_token("eli", "room:keep", ttl=4))
        assert again["type"] == "joined"
        await asyncio.sleep(until_past(first_end))  # the first token's end, and then some
        await still_usable(eli)  # the pong: no unsubscribed came before it
        got = await frames_until(eli, "unsubscribed")
        assert got == [{"type": "unsubscribed", "channel": "room:keep", "reason": "expired"}]


async def test_a_subscription_token_outlives_a_refresh(node: ServerProcess) -> None:
    async with connect(node.url, token=token("fox", join=["chat:*"])) as fox:
        await fox.join("room:r", token=sub_token("fox", "room:r"))
        await fox.join("chat:a")
        ack = await fox.request({"type": "refresh", "token": token("fox", join=[])})
        assert ack["type"] == "ack"
        assert fox._backlog.popleft() == {
            "type": "unsubscribed",
            "channel": "chat:a",
            "reason": "permissions",
        }
        assert not fox._backlog  # room:r stays: its own token allows it


# --- server-side subscriptions ---------------------------------------------------------------


async def test_the_channels_claim_is_joined_right_after_welcome(node: ServerProcess) -> None:
    async with connect(node.url, token=token("pub", publish=["*"])) as pub:
        before = await pub.publish("news:1", "old")
        jwt = token("gia", channels=["news:1", "news:2"])
        async with unidentified(node.url) as gia:
            await auth(gia, jwt)
            first, second = await gia.recv(), await gia.recv()
            assert first == {
                "type": "subscribed",
                "channel": "news:1",
                "offset": before["offset"],
                "epoch": before["epoch"],
            }
            assert (second["type"], second["channel"], second["offset"]) == (
                "subscribed",
                "news:2",
                0,
            )
            await pub.publish("news:2", "new")
            (msg,) = await gia.messages(1)
            assert (msg["channel"], msg["data"]) == ("news:2", "new")
            presence = await gia.request({"type": "presence", "channel": "news:1"})
            assert [m["user"] for m in presence["members"]] == ["gia"]
            assert (await gia.request({"type": "leave", "channel": "news:1"}))["type"] == "left"
            assert (await gia.join("news:1"))["type"] == "joined"  # the claim still allows it


async def test_api_subscribe_and_unsubscribe_on_one_node(node: ServerProcess) -> None:
    async with (
        connect(node.url, token=token("hub")) as one,
        connect(node.url, token=token("hub")) as two,
        connect(node.url, token=token("pub", publish=["*"])) as pub,
    ):
        reply = await post(node, "/api/subscribe", {"user": "hub", "channel": "ops:1"})
        assert reply.status_code == 204
        for c in (one, two):
            frame = await c.expect("subscribed")
            assert (frame["channel"], frame["offset"]) == ("ops:1", 0)
        await pub.publish("ops:1", "hello")
        for c in (one, two):
            assert (await c.messages(1))[0]["data"] == "hello"
        # A second subscribe changes nothing for a connection already in the channel.
        assert (await post(node, "/api/subscribe", {"user": "hub", "channel": "ops:1"})).is_success
        await still_usable(one)
        assert not one._backlog
        assert (
            await post(node, "/api/unsubscribe", {"user": "hub", "channel": "ops:1"})
        ).is_success
        for c in (one, two):
            assert await c.expect("unsubscribed") == {
                "type": "unsubscribed",
                "channel": "ops:1",
                "reason": "server",
            }
        # Placed, then removed: no permission left to join it alone.
        assert await error_code(one, {"type": "join", "channel": "ops:1"}) == "forbidden"
        nobody = await post(node, "/api/subscribe", {"user": "nobody", "channel": "ops:1"})
        assert nobody.status_code == 204
        bad = await post(node, "/api/subscribe", {"user": "hub", "channel": "bad channel"})
        assert bad.status_code == 422
        assert (await post(node, "/api/unsubscribe", {"user": "hub"})).status_code == 422


@pytest.mark.slow
async def test_api_subscribe_reaches_the_users_connections_on_every_node(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    env = {"WSHUB_JWT_SECRET": SECRET, "WSHUB_API_KEY": KEY}
    a, b = (make_server("--broker", redis.url, **env) for _ in range(2))
    async with contextlib.AsyncExitStack() as stack:
        on_a = await stack.enter_async_context(connect(a.url, token=token("ivy")))
        on_b = await stack.enter_async_context(connect(b.url, token=token("ivy")))
        pub = await stack.enter_async_context(connect(a.url, token=token("pub", publish=["*"])))
        assert on_a.welcome["server"]["node"] != on_b.welcome["server"]["node"]
        for c in (on_a, on_b):
            await c.join("user:ivy")
        before = await pub.publish("team:1", "before")
        assert (await post(a, "/api/subscribe", {"user": "ivy", "channel": "team:1"})).is_success
        for c in (on_a, on_b):
            frame = await c.expect("subscribed")
            assert (frame["offset"], frame["epoch"]) == (before["offset"], before["epoch"])
        await pub.publish("team:1", "after")
        for c in (on_a, on_b):
            assert (await c.messages(1))[0]["data"] == "after"
        async with httpx.AsyncClient(base_url=b.http, headers=AUTH) as api:
            presence = (await api.get("/api/channels/team:1/presence")).json()
        assert presence["members"] == [{"user": "ivy", "meta": None, "connections": 2}]
        reply = await post(b, "/api/unsubscribe", {"user": "ivy", "channel": "team:1"})
        assert reply.status_code == 204
        for c in (on_a, on_b):
            assert (await c.expect("unsubscribed"))["reason"] == "server"
        await pub.publish("team:1", "gone")
        # The marker comes after "gone" on every node's one link: had "gone" been delivered,
        # it would have come first.
        await pub.publish("user:ivy", "marker")
        for c in (on_a, on_b):
            assert (await c.recv())["data"] == "marker"
        assert (await post(b, "/api/subscribe", {"user": "zed", "channel": "x"})).is_success


async def test_a_server_join_over_the_channel_limit_is_an_error_naming_the_channel(
    make_server: ServerFactory,
) -> None:
    small = make_server("--max-channels", "1", WSHUB_JWT_SECRET=SECRET, WSHUB_API_KEY=KEY)
    async with connect(small.url, token=token("kim", join=["*"])) as kim:
        await kim.join("mine:1")
        assert (await post(small, "/api/subscribe", {"user": "kim", "channel": "ops:9"})).is_success
        refused = await kim.expect("error")
        assert refused["code"] == "limit" and "'ops:9'" in refused["message"]
        assert "id" not in refused
        # The API also takes a connection out of a channel it joined by itself.
        assert (
            await post(small, "/api/unsubscribe", {"user": "kim", "channel": "mine:1"})
        ).is_success
        assert (await kim.expect("unsubscribed"))["reason"] == "server"


async def test_a_pattern_keeps_the_channel_when_its_subscription_token_ends(
    node: ServerProcess,
) -> None:
    async with connect(node.url, token=token("lee", join=["room:*"])) as lee:
        await lee.join("room:p", token=sub_token("lee", "room:p", ttl=1))
        await lee.join("other:1", token=sub_token("lee", "other:1", ttl=1))
        # other:1 leaves at the common end; room:p, which the patterns allow, stays.
        assert await lee.expect("unsubscribed") == {
            "type": "unsubscribed",
            "channel": "other:1",
            "reason": "expired",
        }
        await still_usable(lee)
        assert not lee._backlog
        assert (await lee.request({"type": "leave", "channel": "room:p"}))["type"] == "left"


async def test_open_mode_does_not_read_a_joins_token(server: ServerProcess) -> None:
    async with connect(server.url, "mo") as mo:
        assert (await mo.join("any:1", token="not even a jwt"))["type"] == "joined"


async def test_library_hub_subscribe_and_the_authorize_hook() -> None:
    from fastapi import FastAPI

    from wshub import Hub
    from wshub.app.server import build_router
    from wshub.core.auth import TokenVerifier
    from wshub.transport.handshake import Handshake

    asked: list[tuple[str, str, str]] = []

    async def authorize(user: str, action: str, channel: str) -> bool:
        asked.append((user, action, channel))
        return channel != "room:closed"

    hub = Hub("memory://", authorize=authorize)
    app = FastAPI()
    app.include_router(build_router(hub, Handshake(TokenVerifier.from_secret(SECRET))))
    async with serve_in_process(app) as host, connect(f"ws://{host}", token=token("nia")) as nia:
        await nia.join("room:open", token=sub_token("nia", "room:open"))
        closed = await nia.request(
            {"type": "join", "channel": "room:closed", "token": sub_token("nia", "room:closed")}
        )
        assert closed["code"] == "forbidden"  # the token allows it; the hook does not
        assert asked == [("nia", "join", "room:open"), ("nia", "join", "room:closed")]
        await hub.subscribe("nia", "room:closed")  # the server's own join asks no one
        assert (await nia.expect("subscribed"))["channel"] == "room:closed"
        assert len(asked) == 2
        await hub.unsubscribe("nia", "room:closed")
        assert (await nia.expect("unsubscribed"))["reason"] == "server"
        await hub.subscribe("nobody", "room:open")  # no connection: no error
        with pytest.raises(ValueError, match="channel"):
            await hub.subscribe("nia", "bad channel")
