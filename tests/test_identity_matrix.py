"""Issue 14's test list for a client that is not ours (the ``websockets`` library), where the
other identity tests leave a gap: every connection here is identified the version 2 way, by
its ``auth`` frame, on real ``wshub serve`` processes (two on a real Redis where it says so).
The close table on such connections is in tests/test_identity_closes.py.

Already covered elsewhere, and not repeated here:
tests/test_identity.py (auth, welcome.expires, 4003 both ways, --auth-timeout, refresh,
ack.expires, refresh racing a publication, bad input before auth), tests/test_subscriptions.py
(subscription tokens and their expiry while messages flow, the channels claim,
/api/subscribe and /api/unsubscribe on one node and on two), tests/test_identity_edges.py
(1001 while waiting for auth), tests/test_api.py (1008 from /api/disconnect),
tests/test_limits.py and tests/test_close_under_load.py (1009), tests/test_delivery.py (4008),
tests/test_stalls.py (1011 on the chat), tests/test_auth.py (4001), tests/test_tokens.py
(``wshub token``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import ServerFactory
from tests.identity_support import (
    SECRET,
    authed,
    close_code,
    error_code,
    expired,
    still_usable,
    sub_token,
    token,
    unidentified,
    unique,
    until_past,
)
from tests.support import ROOT, RedisProcess, ServerProcess, connect
from tests.test_tokens import private_pem, public_pem

KEY = "an-api-key-for-the-identity-matrix"
AUTH = {"Authorization": f"apikey {KEY}"}
ENV = {"WSHUB_JWT_SECRET": SECRET, "WSHUB_API_KEY": KEY}


@pytest.fixture(scope="module")
def node() -> Iterator[ServerProcess]:
    proc = ServerProcess("--max-frame-bytes", "4096", env=ENV).start()
    yield proc
    proc.stop()


async def post(node: ServerProcess, path: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http, headers=AUTH, timeout=10) as api:
        return await api.post(path, json=body)


# --- identity inside the connection ---------------------------------------------------------

BEFORE_AUTH = [
    {"type": "join", "channel": "chat:early"},
    {"type": "leave", "channel": "chat:early"},
    {"type": "publish", "channel": "chat:early", "data": "early"},
    {"type": "send", "to": "PEER", "data": "early"},
    {"type": "presence", "channel": "chat:early"},
    {"type": "history", "channel": "chat:early"},
    {"type": "refresh", "token": token("ann")},
]


async def test_before_auth_every_frame_but_ping_is_unauthorized_and_none_is_served(
    node: ServerProcess,
) -> None:
    peer = unique("peer")
    async with connect(node.url, token=token(peer)) as watcher, unidentified(node.url) as c:
        for frame in BEFORE_AUTH:
            sent = {k: peer if v == "PEER" else v for k, v in frame.items()}
            reply = await c.request(sent)
            assert (reply["type"], reply["code"], reply["id"]) == (
                "error",
                "unauthorized",
                c._next_id,
            )
        await c.send({"type": "auth", "id": "first", "token": token("ann", join=["chat:*"])})
        welcome = await c.expect("welcome")
        assert (welcome["id"], welcome["user"]) == ("first", "ann")
        # Not served: the publication before auth never happened, the direct never came.
        assert (await c.join("chat:early"))["offset"] == 0
        await still_usable(watcher)
        assert not watcher._backlog


async def test_a_frame_over_the_hard_cap_while_waiting_for_auth_closes_with_1009(
    node: ServerProcess,
) -> None:
    async with unidentified(node.url) as c:
        await still_usable(c)
        await c.send("x" * (1024 * 1024 + 10))  # --max-frame-bytes 4096: the cap is 1 MiB
        assert await close_code(c) == 1009
    async with authed(node.url, token("ann")) as after:  # the node goes on
        await still_usable(after)


async def test_frames_while_waiting_do_not_extend_the_auth_timeout(
    make_server: ServerFactory,
) -> None:
    quick = make_server("--auth-timeout", "1.5", **ENV)
    started = time.monotonic()
    async with unidentified(quick.url) as c:
        with contextlib.suppress(websockets.ConnectionClosed):
            while time.monotonic() - started < 10:  # pings all along: answered, not counted
                assert (await c.request({"type": "ping"}))["type"] == "pong"
                await asyncio.sleep(0.2)
        assert c.ws.close_code == 4003
    assert 1.4 <= time.monotonic() - started < 5


# --- token refresh ---------------------------------------------------------------------------


async def test_a_refresh_to_a_token_without_exp_is_acked_with_expires_null(
    node: ServerProcess,
) -> None:
    async with authed(node.url, token("ann", ttl=2)) as c:
        ends = c.welcome["expires"]
        ack = await c.request({"type": "refresh", "token": token("ann", ttl=0)})
        assert ack["type"] == "ack" and "expires" in ack and ack["expires"] is None
        await asyncio.sleep(until_past(ends + 1))  # the old token's end, and then some
        await still_usable(c)


async def test_a_refused_refresh_leaves_the_old_exp_in_force(node: ServerProcess) -> None:
    async with authed(node.url, token("ann", ttl=2)) as c:
        ends = c.welcome["expires"]
        wider = token("eve", join=["*"], ttl=600)
        assert await error_code(c, {"type": "refresh", "token": wider}) == "forbidden"
        assert await error_code(c, {"type": "refresh", "token": expired("ann")}) == "unauthorized"
        await still_usable(c)
        assert await close_code(c) == 4001
        assert time.time() >= ends - 0.05


async def test_a_refresh_leaves_a_claimed_channel_and_joins_none_of_the_new_claim(
    node: ServerProcess,
) -> None:
    user, old, new = unique("u"), unique("news:"), unique("news:")
    async with authed(node.url, token(user, channels=[old])) as c:
        assert (await c.expect("subscribed"))["channel"] == old
        same = await c.request({"type": "refresh", "token": token(user, channels=[old])})
        assert same["type"] == "ack" and not c._backlog  # the same claim keeps it
        ack = await c.request({"type": "refresh", "token": token(user, channels=[new])})
        assert c._backlog.popleft() == {
            "type": "unsubscribed",
            "channel": old,
            "reason": "permissions",
        }
        assert ack["type"] == "ack"
        await still_usable(c)  # the pong: no subscribed to the new claim came before it
        assert not c._backlog
        assert await error_code(c, {"type": "join", "channel": old}) == "forbidden"
        assert (await c.join(new))["type"] == "joined"  # the new claim allows it


async def test_a_channel_the_server_placed_stays_over_a_refresh(node: ServerProcess) -> None:
    user, placed = unique("u"), unique("ops:")
    async with (
        authed(node.url, token(user, join=["x:*"])) as c,
        connect(node.url, token=token("pub", publish=["*"])) as pub,
    ):
        await c.join("x:1")
        assert (await post(node, "/api/subscribe", {"user": user, "channel": placed})).is_success
        assert (await c.expect("subscribed"))["channel"] == placed
        ack = await c.request({"type": "refresh", "token": token(user, join=[])})
        assert ack["type"] == "ack"
        assert list(c._backlog) == [
            {"type": "unsubscribed", "channel": "x:1", "reason": "permissions"}
        ]
        c._backlog.clear()
        await pub.publish(placed, "still placed")
        (message,) = await c.messages(1)
        assert (message["channel"], message["data"]) == (placed, "still placed")


async def test_a_channel_left_on_refresh_is_closed_to_presence_and_history_until_rejoined(
    node: ServerProcess,
) -> None:
    """docs/security.md, "What happens to presence and history on refresh"."""
    user, channel = unique("u"), unique("chat:")
    async with (
        authed(node.url, token(user, join=["chat:*"])) as c,
        connect(node.url, token=token("pub", publish=["*"])) as pub,
    ):
        await c.join(channel)
        await pub.publish(channel, 1)
        (seen,) = await c.messages(1)
        await c.request({"type": "refresh", "token": token(user, join=[])})
        assert (await c.expect("unsubscribed"))["reason"] == "permissions"
        for kind in ("presence", "history"):
            assert await error_code(c, {"type": kind, "channel": channel}) == "forbidden"
        for i in (2, 3, 4):
            await pub.publish(channel, i)
        await still_usable(c)  # after the acks: none of them came to c
        assert not c._backlog
        await c.request({"type": "refresh", "token": token(user, join=["chat:*"])})
        since = {"offset": seen["offset"], "epoch": seen["epoch"]}
        rejoined = await c.join(channel, since=since)
        assert rejoined["recovered"] is True
        assert [m["data"] for m in await c.messages(3)] == [2, 3, 4]
        await still_usable(c)
        assert not c._backlog  # each once


# --- subscription tokens ---------------------------------------------------------------------


async def test_joining_again_with_a_fresh_subscription_token_repeats_and_loses_nothing(
    node: ServerProcess,
) -> None:
    """docs/security.md, "Subscription tokens": the join again is answered ``joined``, and the
    messages flow on through the first token's end."""
    user, room = unique("u"), unique("room:")
    async with (
        authed(node.url, token(user)) as c,
        authed(node.url, token("pub", publish=["*"])) as pub,
    ):
        joined = await c.join(room, token=sub_token(user, room, ttl=2))
        first_end = time.time() + 2
        sent = 0

        async def flow(until: float) -> None:
            nonlocal sent
            while time.time() < until:
                await pub.publish(room, sent)
                sent += 1
                await asyncio.sleep(0.01)

        await flow(first_end - 1)
        again = await c.join(room, token=sub_token(user, room, ttl=60))
        assert again["type"] == "joined"
        await flow(first_end + 1)  # past the first token's end
        await still_usable(c)  # after the last ack: every message is in before the pong
        frames = list(c._backlog)
        assert "unsubscribed" not in [f["type"] for f in frames]
        got = [f["offset"] for f in frames if f["type"] == "message"]
        assert got == list(range(joined["offset"] + 1, joined["offset"] + 1 + sent))


# --- server-side subscriptions ---------------------------------------------------------------


async def test_a_server_join_is_like_any_join_for_the_other_members(node: ServerProcess) -> None:
    user, channel = unique("u"), unique("ops:")
    async with (
        authed(node.url, token(user, join=["ops:*"])) as c,
        authed(node.url, token(unique("w"), join=["ops:*"])) as watcher,
    ):
        await watcher.join(channel)
        assert (await post(node, "/api/subscribe", {"user": user, "channel": channel})).is_success
        assert (await c.expect("subscribed"))["channel"] == channel
        assert (await watcher.expect("member_joined"))["user"] == user
        reply = await post(node, "/api/unsubscribe", {"user": user, "channel": channel})
        assert reply.status_code == 204
        assert (await c.expect("unsubscribed"))["reason"] == "server"
        assert (await watcher.expect("member_left"))["user"] == user
        # The token still allows a join of its own (docs/security.md, "Revocation").
        assert (await c.join(channel))["type"] == "joined"
        assert (await watcher.expect("member_joined"))["user"] == user
        # Only the connections open at the moment: a later one of the same user is not joined.
        async with authed(node.url, token(user, join=["ops:*"])) as later:
            await still_usable(later)
            assert not later._backlog
        nobody = {"user": unique("nobody"), "channel": channel}
        for path in ("/api/subscribe", "/api/unsubscribe"):
            assert (await post(node, path, nobody)).status_code == 204  # a no-op, not an error
        await still_usable(c)


@pytest.mark.slow
async def test_on_two_nodes_a_publication_racing_subscribe_is_seen_once_and_disconnect_ends_both(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a, b = (make_server("--broker", redis.url, **ENV) for _ in range(2))
    user, channel = unique("u"), unique("team:")
    async with authed(a.url, token(user)) as on_a, authed(b.url, token(user)) as on_b:
        assert on_a.welcome["server"]["node"] != on_b.welcome["server"]["node"]
        assert (await post(a, "/api/subscribe", {"user": user, "channel": channel})).is_success
        # At once, through the other node, while the nodes may still be joining: each
        # connection's subscribed position says whether the publication is before it or
        # comes to it, never both and never neither.
        racing = await post(b, "/api/publish", {"channel": channel, "data": "racing"})
        assert racing.json()["offset"] == 1
        positions = [(await c.expect("subscribed"))["offset"] for c in (on_a, on_b)]
        assert set(positions) <= {0, 1}
        assert (await post(a, "/api/publish", {"channel": channel, "data": "after"})).is_success
        for c, position in zip((on_a, on_b), positions, strict=True):
            got = await c.messages(2 - position)
            assert [m["offset"] for m in got] == list(range(position + 1, 3))
            await still_usable(c)
            assert not c._backlog
        assert (await post(b, "/api/disconnect", {"user": user})).status_code == 204
        for c in (on_a, on_b):
            assert await close_code(c) == 1008
            assert c.ws.close_reason == "disconnected by the server"


# --- wshub token, on a real hub --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_wshub_token_signs_what_a_hub_with_the_public_key_accepts(
    tmp_path: Path, kind: str
) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    (tmp_path / "private.pem").write_bytes(private_pem(key))
    (tmp_path / "public.pem").write_bytes(public_pem(key))
    hub = ServerProcess("--jwt-public-key", str(tmp_path / "public.pem")).start()

    key_file = str(tmp_path / "private.pem")

    def wshub_token(*args: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "wshub",
                "token",
                "--user",
                "kim",
                "--private-key",
                key_file,
                *args,
            ],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("WSHUB_")},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    try:
        claims = ["--join", "chat:*", "--join", "team:1", "--publish", "chat:a"]
        minted = time.time()
        jwt = wshub_token(*claims, "--channels", "news", "--ttl", "60")
        room = wshub_token("--channel", "room:9", "--ttl", "30")
        async with authed(hub.url, jwt) as kim:
            assert minted + 59 <= kim.welcome["expires"] <= time.time() + 60
            assert (await kim.expect("subscribed"))["channel"] == "news"
            for channel in ("chat:x", "team:1"):
                await kim.join(channel)
            await kim.publish("chat:a", "signed")
            denied = {"type": "publish", "channel": "chat:x", "data": 1}
            assert await error_code(kim, denied) == "forbidden"
            assert await error_code(kim, {"type": "join", "channel": "room:9"}) == "forbidden"
            assert (await kim.join("room:9", token=room))["channel"] == "room:9"
    finally:
        hub.stop()
