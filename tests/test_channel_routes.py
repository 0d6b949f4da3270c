"""Channel routes over real sockets: the `websockets` library against uvicorn running a shop
whose ``orders:{order_id}`` checks take FastAPI dependencies resolved from the handshake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from fastapi import Body, Depends, FastAPI

from tests.channel_app import (
    ORDERS,
    as_user,
    build,
    calls,
    closed,
    connect,
    counting,
    current_user,
)
from tests.identity_support import SECRET, sub_token, token
from tests.support import connect as connect_as
from tests.support import serve_in_process
from tests.test_hub import Peer
from tests.test_transport_units import until
from wshub import Hub
from wshub.app.dependencies import connection_user
from wshub.app.routes import build_router
from wshub.app.server import create_app
from wshub.core.auth import TokenVerifier
from wshub.transport.handshake import Handshake


@pytest.fixture
async def base() -> AsyncIterator[str]:
    _, app = build()
    async with serve_in_process(app) as address:
        yield f"ws://{address}"


async def test_a_pattern_parameter_is_converted_and_the_check_decides(base: str) -> None:
    async with connect(base, as_user("alice")) as alice:
        assert (await alice.join("orders:42"))["channel"] == "orders:42"
        refused = await alice.request({"type": "join", "channel": "orders:7"})
        assert (refused["code"], refused["message"]) == (
            "forbidden",
            "no permission to join 'orders:7'",
        )
        bad = await alice.request({"type": "join", "channel": "orders:abc"})
        assert bad["type"] == "error" and bad["code"] == "bad_request"
        assert bad["message"] == (
            "path.order_id: Input should be a valid integer, unable to parse string as an "
            "integer [int_parsing]"
        )
        assert bad["id"] == alice._next_id
        assert (await alice.request({"type": "ping"}))["type"] == "pong"


async def test_every_parameter_error_is_named_and_query_and_cookies_are_read(base: str) -> None:
    cookie = {"Cookie": "session=s3cret"}
    async with connect(base, cookie, tenant="acme") as visitor:
        assert (await visitor.join("shop:north:2026-12-01"))["type"] == "joined"
        bad = await visitor.request({"type": "join", "channel": "shop:east:yesterday"})
        assert bad["code"] == "bad_request"
        assert "path.region: Input should be 'north' or 'south' [enum]" in bad["message"]
        assert "path.day: Input should be a valid date" in bad["message"]
        old = await visitor.request({"type": "join", "channel": "shop:south:2025-01-01"})
        assert old["code"] == "forbidden"
        # Reading a channel is joining it: presence and history ask the same check.
        for kind in ("presence", "history"):
            reply = await visitor.request({"type": kind, "channel": "shop:south:2026-12-02"})
            assert reply["type"] == kind
    async with connect(base, {"Cookie": "session=wrong"}, tenant="acme") as stranger:
        reply = await stranger.request({"type": "join", "channel": "shop:north:2026-12-01"})
        assert reply["code"] == "forbidden"
        reply = await stranger.request({"type": "history", "channel": "shop:north:2026-12-01"})
        assert reply["code"] == "forbidden"


async def test_path_constraints_and_required_headers_are_fastapis(base: str) -> None:
    with counting():
        async with connect(base, {"X-Pass": "gold"}) as gold, connect(base) as none:
            assert (await gold.join("vip:2"))["type"] == "joined"
            low = await gold.request({"type": "join", "channel": "vip:0"})
            assert (low["code"], low["message"]) == (
                "bad_request",
                "path.level: Input should be greater than or equal to 1 [greater_than_equal]",
            )
            missing = await none.request({"type": "join", "channel": "vip:2"})
            assert (missing["code"], missing["message"]) == (
                "bad_request",
                "header.x-pass: Field required [missing]",
            )
            await gold.join("vip:3")
            assert calls["fresh:gold"] == 3  # use_cache=False: every check, even on one socket


async def test_an_http_exception_in_a_dependency_is_forbidden_with_its_detail(base: str) -> None:
    async with connect(base) as nobody, connect(base, as_user("carol")) as carol:
        reply = await nobody.request({"type": "join", "channel": "orders:42"})
        assert (reply["code"], reply["message"]) == ("forbidden", "who are you? send X-User")
        event = {"status": "shipped", "at": "2026-12-01T10:00:00Z"}
        reply = await carol.request({"type": "publish", "channel": "orders:42", "data": event})
        assert reply["code"] == "forbidden"
        assert reply["message"] == '{"reason": "staff only", "user": "carol"}'
        assert (await carol.request({"type": "ping"}))["type"] == "pong"
        assert (await nobody.request({"type": "ping"}))["type"] == "pong"
    async with connect(base, as_user("mallory")) as mallory:
        reply = await mallory.request({"type": "join", "channel": "orders:42"})
        assert (reply["code"], reply["message"]) == ("forbidden", "banned")
        assert (await mallory.request({"type": "ping"}))["type"] == "pong"  # not closed


async def test_dependencies_run_once_per_connection_unless_they_read_the_channel(
    base: str,
) -> None:
    with counting():
        async with connect(base, as_user("alice")) as alice:
            for _ in range(2):
                await alice.join("orders:42")
                await alice.join("orders:43")
            await alice.request({"type": "presence", "channel": "orders:42"})
            assert calls["current_user:alice"] == 1
            assert (calls["order_of:alice:42"], calls["order_of:alice:43"]) == (3, 2)
        async with connect(base, as_user("alice")) as again:
            await again.join("orders:42")
            assert calls["current_user:alice"] == 2  # a new connection: a new "request"
        async with connect(base, as_user("dave", "staff")) as dave:
            for _ in range(3):
                await dave.request(
                    {"type": "publish", "channel": "orders:7", "data": {"status": "placed"}}
                )
            assert (calls["current_user:dave"], calls["staff:dave"]) == (1, 1)


async def test_a_yield_dependency_is_closed_after_each_check(base: str) -> None:
    closed.pop("alice", None)
    async with connect(base, as_user("alice")) as alice:
        await alice.join("orders:42")
        # Closed before the reply was sent: the event is already set, nothing to wait for.
        assert closed["alice"].is_set()
        closed["alice"].clear()
        await alice.join("orders:43")
        assert closed["alice"].is_set()  # it ran (and closed) again: never cached


async def test_a_channel_without_a_route_or_check_falls_back_to_authorize(base: str) -> None:
    async with connect(base, user="eve") as eve:
        assert (await eve.join("chat:lobby"))["type"] == "joined"
        assert (await eve.join("feed:news"))["type"] == "joined"  # a model but no can_join
        assert (await eve.join("orders"))["type"] == "joined"  # matches no route
        refused = await eve.request({"type": "join", "channel": "admin:ops"})
        assert (refused["code"], refused["message"]) == (
            "forbidden",
            "no permission to join 'admin:ops'",
        )


async def test_the_apps_dependency_overrides_apply() -> None:
    _, app = build()

    async def everyone_is_alice() -> str:
        return "alice"

    app.dependency_overrides[current_user] = everyone_is_alice
    async with serve_in_process(app) as address, connect(f"ws://{address}") as anyone:
        assert (await anyone.join("orders:42"))["type"] == "joined"


def needs_a_body(payload: Annotated[dict[str, int], Body()]) -> int:
    return len(payload)


def test_a_bad_pattern_or_check_is_refused_when_declared() -> None:
    hub = Hub("memory://")
    for pattern, says in (
        ("orders:{order id}", "not a parameter name"),
        ("a:{x}:{x}", "appears twice"),
        ("orders/{id}", "characters of a channel name"),
    ):
        with pytest.raises(ValueError, match=says):
            hub.channel(pattern)
    route = hub.channel("orders:{order_id}")

    @route.can_join
    async def first(order_id: int) -> bool:
        return True

    with pytest.raises(ValueError, match="already has a can_join check"):
        route.can_join(first)
    with pytest.raises(TypeError, match="has no body to read"):

        @route.can_publish
        async def reads_a_body(order_id: int, payload: Annotated[dict[str, int], Body()]) -> bool:
            return True

    with pytest.raises(TypeError, match="has no body to read"):

        @route.can_publish
        async def through_a_dependency(n: Annotated[int, Depends(needs_a_body)]) -> bool:
            return True


async def test_under_token_auth_a_check_sees_the_user_and_decides_alone() -> None:
    hub = Hub("memory://")
    orders = hub.channel("orders:{order_id}")

    @orders.can_join
    async def may_follow(order_id: int, user: Annotated[str, Depends(connection_user)]) -> bool:
        return ORDERS.get(order_id) == user

    app = FastAPI()
    app.include_router(build_router(hub, Handshake(TokenVerifier.from_secret(SECRET))))
    async with serve_in_process(app) as address:
        base = f"ws://{address}"
        async with connect_as(base, token=token("alice", join=["*"])) as alice:
            assert (await alice.join("orders:42"))["type"] == "joined"
            # The token's "*" does not matter: the route's check decides, and says no...
            refused = await alice.request({"type": "join", "channel": "orders:7"})
            assert refused["code"] == "forbidden"
            # ...even to a subscription token for that very channel.
            frame = {"type": "join", "channel": "orders:7", "token": sub_token("alice", "orders:7")}
            assert (await alice.request(frame))["code"] == "forbidden"
            assert (await alice.join("chat:x"))["type"] == "joined"  # no route: the token's "*"
        async with connect_as(base, token=token("bob")) as bob:  # no join patterns at all
            assert (await bob.join("orders:7"))["type"] == "joined"
            assert (await bob.request({"type": "join", "channel": "chat:x"}))["code"] == "forbidden"


async def test_a_connection_that_no_endpoint_opened_offers_no_handshake() -> None:
    """A transport that does not register its handshake: checks see no headers, and cache
    nothing for the connection (it is never told when it ends)."""
    hub, _ = build()
    await hub.start()
    try:
        peer = Peer(hub, "alice")
        reply = await peer.say({"type": "join", "channel": "orders:42", "id": 1})
        assert (reply["code"], reply["message"]) == ("forbidden", "who are you? send X-User")
        assert len(hub.channel_routes.handshakes) == 0
    finally:
        await hub.stop()


async def test_a_connections_handshake_is_forgotten_when_it_ends() -> None:
    hub, app = build()
    async with serve_in_process(app) as address:
        async with connect(f"ws://{address}", as_user("alice")) as alice:
            await alice.join("orders:42")
            assert len(hub.channel_routes.handshakes) == 1
        # Counted out last, after its handshake was forgotten.
        await until(lambda: hub.connection_count == 0)
        assert len(hub.channel_routes.handshakes) == 0


async def test_a_hub_without_routes_keeps_no_handshake() -> None:
    """Nothing would read it: an idle connection of a hub with no routes holds no request."""
    hub = Hub("memory://")
    async with (
        serve_in_process(create_app(hub)) as address,
        connect(f"ws://{address}", user="alice") as alice,
    ):
        await alice.join("chat:lobby")
        assert hub.connection_count == 1
        assert len(hub.channel_routes.handshakes) == 0
