"""The Python client follows the protocol's "client does" column for close codes and refused
handshakes, against real `wshub serve` processes."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request

import pytest

from tests.conftest import ServerFactory
from tests.proxy import TcpProxy
from tests.support import connect, http_get
from wshub.client import (
    Action,
    Backoff,
    Client,
    Refused,
    State,
    Stopped,
    Subscription,
    after_close,
    after_refusal,
)
from wshub.core.auth import mint_token

SECRET = "s" * 40
KEY = "test-api-key"


def post(base: str, path: str, body: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"apikey {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        status: int = resp.status
        return status


async def drain(stream: Subscription) -> None:
    async for _ in stream:
        pass


def test_the_policy_is_the_protocols_table() -> None:
    assert after_close(1000) is Action.NOTHING
    for code in (1001, 1011, 1012, 4008, 1006):
        assert after_close(code) is Action.RECONNECT
    for code in (1008, 1009, 1002, 1003, 1007, 1010):  # the last four: as wshub.js does
        assert after_close(code) is Action.STOP
    for code in (4001, 4003):
        assert after_close(code) is Action.NEW_TOKEN
    assert after_refusal(401) is Action.NEW_TOKEN
    assert after_refusal(403) is Action.STOP
    assert after_refusal(503) is Action.RECONNECT
    assert after_refusal(400) is Action.STOP
    # 503 waits at least Retry-After, whatever the attempt.
    assert all(3.0 <= Backoff(0.01, 0.02).delay(0, at_least=3.0) <= 4.5 for _ in range(100))


async def test_disconnected_through_the_api_the_client_stops_and_says_why(
    make_server: ServerFactory,
) -> None:
    node = make_server("--api-key", KEY)
    states: list[State] = []
    stops: list[Stopped] = []
    async with Client(
        node.url, user="zoe", backoff_min=0.01, on_state=states.append, on_stop=stops.append
    ) as zoe:
        stream = zoe.subscribe("stop:here")
        async with connect(node.url, "pub") as pub:
            first = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0)
            while not first.done():  # until zoe has joined: then the message reaches her
                await pub.publish("stop:here", "hello")
                await asyncio.wait({first}, timeout=0.05)
        assert (await first).data == "hello"
        assert await asyncio.to_thread(post, node.http, "/api/disconnect", {"user": "zoe"}) < 300
        with pytest.raises(Stopped) as stopped:
            await asyncio.wait_for(drain(stream), 10)
        assert stopped.value.code == 1008
        assert "disconnected" in stopped.value.reason
        # The decision to reconnect is taken (state "reconnecting") before any backoff: it
        # was not taken, and the link is closed for good.
        assert states == ["connecting", "open", "closed"]
        assert zoe.reconnects == 0
        assert zoe.stopped is stopped.value and stops == [stopped.value]
        with pytest.raises(Stopped):
            await zoe.publish("stop:here", "after")


async def test_a_token_provider_next_to_a_string_token_refreshes_it(
    make_server: ServerFactory,
) -> None:
    # token_provider is the deprecated spelling of a token function (see
    # test_client_identity.py for 4001, then a new token and a resume).
    node = make_server("--jwt-secret", SECRET)
    asked: list[float] = []

    async def fresh() -> str:
        asked.append(asyncio.get_running_loop().time())
        return mint_token(SECRET, "amy", ["renew:*"], ["renew:*"], ttl=3600)

    short = mint_token(SECRET, "amy", ["renew:*"], ["renew:*"], ttl=1)
    refreshed: asyncio.Queue[float | None] = asyncio.Queue()
    async with Client(
        node.url, token=short, token_provider=fresh, on_refresh=refreshed.put_nowait
    ) as amy:
        stream = amy.subscribe("renew:x")
        await amy.join("renew:x")
        await amy.publish("renew:x", "before")
        assert (await anext(stream)).data == "before"
        expires = await asyncio.wait_for(refreshed.get(), 10)  # before the 1 s token ends
        assert expires is not None and expires > amy.welcome["expires"]
        assert len(asked) == 1 and amy.token != short
        await amy.publish("renew:x", "after")
        assert (await anext(stream)).data == "after"
        assert amy.stopped is None and amy.reconnects == 0


@pytest.mark.parametrize("provider", ["none", "returns None"])
async def test_an_expired_token_with_no_new_one_stops_with_a_clear_error(
    make_server: ServerFactory, provider: str
) -> None:
    node = make_server("--jwt-secret", SECRET)
    asked: list[bool] = []

    async def nothing() -> str | None:
        asked.append(True)
        return None

    states: list[State] = []
    # Long enough to outlive the first connect on a loaded machine, short enough to end here.
    short = mint_token(SECRET, "ben", ["exp:*"], ttl=3)
    async with Client(
        node.url,
        token=short,
        token_provider=nothing if provider == "returns None" else None,
        backoff_min=0.01,
        on_state=states.append,
    ) as ben:
        stream = ben.subscribe("exp:x")
        with pytest.raises(Stopped) as stopped:
            async with asyncio.timeout(10):
                await anext(stream)
        assert stopped.value.code == 4001
        assert "expired" in str(stopped.value) and "no new token" in str(stopped.value)
        assert states == ["connecting", "open", "closed"]
        # Asked to refresh before the end, then again after the 4001.
        assert asked == ([True, True] if provider == "returns None" else [])


async def test_a_refused_token_carries_the_servers_reason(make_server: ServerFactory) -> None:
    node = make_server("--jwt-secret", SECRET)
    forged = mint_token("x" * 40, "eve", ["a:*"])
    with pytest.raises(Refused) as refused:
        await Client(node.url, token=forged).connect()
    assert refused.value.status == 401
    assert "signature" in refused.value.reason and "signature" in str(refused.value)
    expired = mint_token(SECRET, "eve", ["a:*"], ttl=1)
    await asyncio.sleep(2)  # the token's exp is a whole second: let it pass
    with pytest.raises(Refused) as refused:
        await Client(node.url, token=expired).connect()
    assert "expired" in refused.value.reason


async def test_a_first_handshake_refused_with_401_asks_the_provider(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET)

    async def fresh() -> str:
        return mint_token(SECRET, "cat", ["a:*"])

    async with Client(node.url, token="not-a-jwt", token_provider=fresh) as cat:
        assert cat.user == "cat"


async def test_a_frame_over_the_hard_cap_stops_the_client(make_server: ServerFactory) -> None:
    node = make_server("--max-frame-bytes", "1000")
    async with Client(node.url, user="big", backoff_min=0.01) as big:
        with pytest.raises(Stopped):
            await big.publish("a:b", "x" * (2 * 1024 * 1024))  # the hard cap is 1 MiB
        assert big.stopped is not None and big.stopped.code == 1009
        assert big.reconnects == 0 and big.state == "closed"


async def test_a_503_on_reconnect_waits_at_least_retry_after(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wshub.client")
    node = make_server("--max-connections", "1")
    proxy = await TcpProxy(node.port).start()
    opened: list[float] = []
    loop = asyncio.get_running_loop()

    def on_state(state: State) -> None:
        if state == "open":
            opened.append(loop.time())

    try:
        async with Client(
            proxy.url, user="x", backoff_min=0.01, backoff_max=0.02, on_state=on_state
        ) as x:
            proxy.freeze()  # no way back in, until the slot is taken
            proxy.cut()
            async with asyncio.timeout(10):  # the server lets go of the dropped link
                while json.loads((await http_get(f"{node.http}/healthz"))[1])["connections"]:
                    await asyncio.sleep(0.02)
            async with connect(node.url, "filler"):
                proxy.thaw()
                async with asyncio.timeout(10):
                    while not (refusals := [r for r in caplog.records if "HTTP 503" in r.message]):
                        await asyncio.sleep(0.005)
            refused_at = loop.time()  # the slot is free again from here
            async with asyncio.timeout(10):
                while x.reconnects == 0:
                    await asyncio.sleep(0.01)
            assert "Retry-After" not in refusals[0].message  # the reason, in words
            assert "connection limit" in refusals[0].message
            # Backoff alone would have been back within 20 ms; Retry-After says 1 s.
            assert opened[-1] - refused_at >= 0.9
            assert len([r for r in caplog.records if "HTTP 503" in r.message]) == 1
    finally:
        await proxy.close()
