"""Identity inside the connection and token refresh, over real sockets on real ``wshub serve``
processes, with a client that is not ours (docs/protocol.md "Identity inside the connection",
"Token refresh")."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import websockets

from tests.conftest import ServerFactory
from tests.identity_support import (
    SECRET,
    auth,
    close_code,
    error_code,
    expired,
    still_usable,
    sub_token,
    token,
    unidentified,
    until_past,
)
from tests.support import ServerProcess, connect


@pytest.fixture(scope="module")
def node() -> Iterator[ServerProcess]:
    proc = ServerProcess(
        "--auth-timeout", "1.5", "--max-frame-bytes", "4096", env={"WSHUB_JWT_SECRET": SECRET}
    ).start()
    yield proc
    proc.stop()


# --- the auth frame --------------------------------------------------------------------------


async def test_nothing_is_served_until_auth_then_welcome_answers_it(node: ServerProcess) -> None:
    async with unidentified(node.url) as c:
        # The first frame the server sends is this pong: no welcome came unasked before it.
        assert await c.request({"type": "ping"}) == {"type": "pong", "id": 1}
        assert await error_code(c, {"type": "join", "channel": "user:ann"}) == "unauthorized"
        assert await error_code(c, {"type": "publish", "channel": "a", "data": 1}) == (
            "unauthorized"
        )
        exp = int(time.time()) + 600
        welcome = await c.request({"type": "auth", "token": token("ann", join=["chat:*"], ttl=600)})
        assert welcome["type"] == "welcome" and welcome["id"] == 4
        assert welcome["user"] == "ann"
        assert exp - 1 <= welcome["expires"] <= exp + 1
        assert (await c.join("chat:a"))["channel"] == "chat:a"
        assert await error_code(c, {"type": "auth", "token": token("ann")}) == "bad_request"


async def test_a_token_in_the_url_gets_welcome_at_once_with_expires(node: ServerProcess) -> None:
    exp = int(time.time()) + 300
    async with connect(node.url, token=token("bo", ttl=300)) as c:
        assert exp - 1 <= c.welcome["expires"] <= exp + 1
        assert "id" not in c.welcome
        assert await error_code(c, {"type": "auth", "token": token("bo")}) == "bad_request"
    async with connect(node.url, token=token("bo", ttl=0)) as c:
        assert c.welcome["expires"] is None


@pytest.mark.parametrize(
    ("jwt", "why"),
    [
        (expired("ann"), "expired"),
        (token("ann").rsplit(".", 1)[0] + ".AAAA", "signature"),
        (sub_token("ann", "room:1"), "subscription token"),
        ("x" * 4000, "malformed"),  # a huge token, just under the frame limit
    ],
    ids=["expired", "bad-signature", "subscription-token", "huge"],
)
async def test_a_bad_auth_token_is_unauthorized_then_4003(
    node: ServerProcess, jwt: str, why: str
) -> None:
    async with unidentified(node.url) as c:
        reply = await c.request({"type": "auth", "token": jwt})
        assert (reply["type"], reply["code"]) == ("error", "unauthorized")
        assert why in reply["message"]
        assert await close_code(c) == 4003


async def test_no_auth_in_time_closes_with_4003(node: ServerProcess) -> None:
    started = time.monotonic()
    async with unidentified(node.url) as c:
        assert await close_code(c) == 4003
    assert 1.4 <= time.monotonic() - started < 5


async def test_bad_input_before_auth_gets_its_error_and_auth_still_works(
    node: ServerProcess,
) -> None:
    async with unidentified(node.url) as c:
        assert await error_code(c, {"type": "auth", "token": 42}) == "bad_request"
        assert await error_code(c, {"type": "auth", "token": ["a"]}) == "bad_request"
        assert await error_code(c, {"type": "refresh", "token": token("ann")}) == "unauthorized"
        await c.ws.send(b"\x00binary")
        assert (await c.expect("error"))["code"] == "bad_frame"
        await c.send(json.dumps({"type": "auth", "token": "x" * 5000}))  # over the frame limit
        assert (await c.expect("error"))["code"] == "too_large"
        await c.send("{not json")
        assert (await c.expect("error"))["code"] == "bad_json"
        assert (await auth(c, token("ann")))["user"] == "ann"
        await still_usable(c)


async def test_open_mode_answers_auth_and_refresh_with_bad_request(server: ServerProcess) -> None:
    async with connect(server.url, "olga") as c:
        assert c.welcome["expires"] is None
        assert await error_code(c, {"type": "auth", "token": token("olga")}) == "bad_request"
        assert await error_code(c, {"type": "refresh", "token": token("olga")}) == "bad_request"
        await still_usable(c)


async def test_a_connection_waiting_for_auth_counts_against_the_caps(
    make_server: ServerFactory,
) -> None:
    capped = make_server(
        "--max-connections", "2", "--max-connections-per-user", "1", WSHUB_JWT_SECRET=SECRET
    )
    async with unidentified(capped.url) as first, unidentified(capped.url) as second:
        await still_usable(first)  # both admitted, though neither is anyone yet
        await still_usable(second)
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with unidentified(capped.url):
                pass
        assert refused.value.response.status_code == 503
        await auth(first, token("ann"))
        # The per-user cap applies once the user is known: as a 503 would, error then 1001.
        reply = await second.request({"type": "auth", "token": token("ann")})
        assert (reply["type"], reply["code"]) == ("error", "limit")
        assert await close_code(second) == 1001
        await still_usable(first)


# --- refresh ---------------------------------------------------------------------------------


async def test_refresh_moves_the_4001_close_to_the_new_exp(node: ServerProcess) -> None:
    async with connect(node.url, token=token("cy", ttl=2)) as c:
        old_exp = c.welcome["expires"]
        later = int(time.time()) + 600
        ack = await c.request({"type": "refresh", "token": token("cy", ttl=600)})
        assert ack["type"] == "ack" and later - 1 <= ack["expires"] <= later + 1
        await asyncio.sleep(until_past(old_exp + 1))  # the old token's end, and then some
        await still_usable(c)
        ack = await c.request({"type": "refresh", "token": token("cy", ttl=1)})
        soon = ack["expires"]
        assert await close_code(c) == 4001
        assert time.time() >= soon - 0.05


async def test_refresh_of_another_user_or_a_bad_token_changes_nothing(
    node: ServerProcess,
) -> None:
    async with connect(node.url, token=token("di", join=["chat:*"])) as c:
        await c.join("chat:a")
        reply = await c.request({"type": "refresh", "token": token("eve", join=["*"])})
        assert (reply["code"], reply["id"]) == ("forbidden", 2)
        assert "'eve'" in reply["message"]
        for bad, code in (
            ("garbage", "unauthorized"),
            (expired("di"), "unauthorized"),
            (sub_token("di", "chat:a"), "unauthorized"),
            ("x" * 4000, "unauthorized"),  # a huge token
            (17, "bad_request"),  # a token of the wrong type
        ):
            assert await error_code(c, {"type": "refresh", "token": bad}) == code
        # Still di, still in chat:a with the old permissions, still not allowed news.
        assert await error_code(c, {"type": "join", "channel": "news:x"}) == "forbidden"
        assert (await c.join("chat:b"))["type"] == "joined"


async def test_refresh_with_fewer_permissions_leaves_what_they_no_longer_allow(
    node: ServerProcess,
) -> None:
    wide = token("fay", join=["chat:*", "news:*"], publish=["chat:*", "news:*"])
    async with (
        connect(node.url, token=wide) as fay,
        connect(node.url, token=token("gus", publish=["*"])) as gus,
    ):
        await fay.join("chat:a")
        await fay.join("news:b")
        await fay.join("user:fay")
        reply = await fay.request({"type": "refresh", "token": token("fay", join=["chat:*"])})
        # Left before the ack: nothing of news:b can come after it.
        assert fay._backlog.popleft() == {
            "type": "unsubscribed",
            "channel": "news:b",
            "reason": "permissions",
        }
        assert reply["type"] == "ack"
        assert not fay._backlog
        await gus.publish("news:b", "gone")
        await gus.publish("chat:a", "still here")
        (msg,) = await fay.messages(1)
        assert (msg["channel"], msg["data"]) == ("chat:a", "still here")
        assert await error_code(fay, {"type": "join", "channel": "news:b"}) == "forbidden"
        assert await error_code(fay, {"type": "publish", "channel": "chat:a", "data": 1}) == (
            "forbidden"  # the publish patterns were replaced too
        )


async def test_refresh_racing_a_publication_loses_and_repeats_nothing(
    node: ServerProcess,
) -> None:
    count = 400
    async with (
        connect(node.url, token=token("hal", join=["race:*"])) as hal,
        connect(node.url, token=token("ida", publish=["race:*"])) as ida,
    ):
        await hal.join("race:1")

        async def flood() -> None:
            for i in range(count):
                await ida.send({"type": "publish", "channel": "race:1", "data": i})

        async def refresh_all_along() -> int:
            acks = 0
            while acks < 20:
                reply = await hal.request(
                    {"type": "refresh", "token": token("hal", join=["race:*"])}
                )
                assert reply["type"] == "ack", reply
                acks += 1
            return acks

        publishing = asyncio.create_task(flood())
        assert await refresh_all_along() == 20
        await publishing
        got = await hal.messages(count, timeout=20)
        assert [m["data"] for m in got] == list(range(count))
        offsets = [m["offset"] for m in got]
        assert offsets == list(range(offsets[0], offsets[0] + count))
        await still_usable(hal)


async def test_a_subscription_token_in_the_url_is_refused_401(node: ServerProcess) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(node.url, token=sub_token("ann", "room:1")):
            pass
    assert refused.value.response.status_code == 401
    assert b"subscription token" in refused.value.response.body


async def test_refresh_leaves_presence_of_the_channels_it_keeps_alone(node: ServerProcess) -> None:
    async with (
        connect(node.url, token=token("pia", join=["hall:*"])) as pia,
        connect(node.url, token=token("quin", join=["hall:*"])) as quin,
    ):
        await quin.join("hall:1")
        await pia.join("hall:1", meta={"seat": 3})
        assert (await quin.expect("member_joined"))["user"] == "pia"
        ack = await pia.request({"type": "refresh", "token": token("pia", join=["hall:*"])})
        assert ack["type"] == "ack"
        presence = await quin.request({"type": "presence", "channel": "hall:1"})
        assert {m["user"]: m["meta"] for m in presence["members"]} == {
            "pia": {"seat": 3},
            "quin": None,
        }
        # No member_left or member_joined came for pia's refresh: the next frame is the reply.
        assert not quin._backlog
        await pia.request({"type": "refresh", "token": token("pia", join=[])})
        assert (await quin.expect("member_left"))["user"] == "pia"
