"""The Python client's subscription tokens and server-side subscriptions (PROTOCOL.md v2),
against real ``wshub serve`` processes."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, sub_token, token
from tests.support import connect
from tests.test_client_identity import publishing, until_offset
from wshub.client import Client, Message, Unsubscribed, expiry_of

KEY = "an-api-key-for-the-client-grant-tests"


async def post(base: str, path: str, body: Any) -> int:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"apikey {KEY}"}, timeout=10
    ) as api:
        return (await api.post(path, json=body)).status_code


async def test_subscription_tokens_are_asked_per_channel_and_renewed_while_messages_flow(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET)
    asked: dict[str, list[str]] = {}
    third_ask = asyncio.Event()

    async def grant(channel: str) -> str | None:
        if channel == "open:x":
            return None  # allowed by the connection token: joined without one
        jwt = sub_token("sue", channel, ttl=2)
        asked.setdefault(channel, []).append(jwt)
        if len(asked[channel]) == 3:
            third_ask.set()
        return jwt

    unsubscribed: list[Unsubscribed] = []
    async with Client(
        node.url,
        token=token("sue", join=["open:*"]),  # no pattern lets her into room:*
        subscription_token=grant,
        on_unsubscribed=unsubscribed.append,
    ) as sue:
        await sue.join("room:a")
        room = sue.subscribe("room:a")  # already joined: iterating it joins nothing again
        await sue.join("open:x")
        assert sorted(asked) == ["room:a"]
        first_end = expiry_of(asked["room:a"][0])
        assert first_end is not None
        got: list[int] = []
        async with publishing(node.url, "room:a") as acked:
            reading = asyncio.create_task(until_offset(room, 10**9, got))
            # The third ask renews the second token, which came after 75 % of the first
            # one's life: by then the first one has ended (see the refresh test).
            await asyncio.wait_for(third_ask.wait(), 15)
            assert time.time() > first_end
            last_before = acked[-1]
            async with asyncio.timeout(10):
                while not got or got[-1] < last_before + 5:  # flowing past the first end
                    await asyncio.sleep(0.01)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        assert got == list(range(1, got[-1] + 1))  # no gap at a renewal
        assert unsubscribed == [] and sue.grants.renewals >= 2
        assert sue.reconnects == 0 and "room:a" in sue.channels


async def test_subscription_tokens_are_asked_again_on_every_rejoin(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET)
    asked: list[str] = []

    async def grant(channel: str) -> str:
        asked.append(channel)
        return sub_token("sam", channel)

    async with Client(
        node.url, token=token("sam"), subscription_token=grant, backoff_min=0.01
    ) as sam:
        await sam.join("vip:a")
        await sam.join("vip:b")
        assert asked == ["vip:a", "vip:b"]
        await asyncio.to_thread(node.restart)  # 1001, then back
        async with asyncio.timeout(15):
            await sam.ping()  # waits for the link to come back, re-joined
        assert sam.reconnects == 1
        assert sorted(asked) == ["vip:a", "vip:a", "vip:b", "vip:b"]
        assert sorted(sam.channels) == ["vip:a", "vip:b"]


async def test_server_side_subscriptions_are_surfaced_and_iterable(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET, "--api-key", KEY)
    subscribed: asyncio.Queue[str] = asyncio.Queue()
    gone: asyncio.Queue[Unsubscribed] = asyncio.Queue()
    ida_client = Client(
        node.url,
        token=token("ida", channels=["news:a"]),
        on_subscribed=subscribed.put_nowait,
        on_unsubscribed=gone.put_nowait,
    )
    async with connect(node.url, token=token("pub", publish=["*"])) as pub, ida_client as ida:
        assert await asyncio.wait_for(subscribed.get(), 10) == "news:a"
        assert ida.channels == ["news:a"]
        await pub.publish("news:a", "early")  # before the app iterates: kept for it
        await pub.publish("news:a", "later")
        news = ida.subscribe("news:a")
        assert [(await anext(news)).data for _ in range(2)] == ["early", "later"]

        assert await post(node.http, "/api/subscribe", {"user": "ida", "channel": "tv:b"}) < 300
        assert await asyncio.wait_for(subscribed.get(), 10) == "tv:b"
        tv = ida.subscribe("tv:b")
        offset = (await pub.publish("tv:b", "on air"))["offset"]
        message = await asyncio.wait_for(anext(tv), 10)
        assert (message.offset, message.data) == (offset, "on air")

        body = {"user": "ida", "channel": "tv:b"}
        assert await post(node.http, "/api/unsubscribe", body) < 300
        assert await asyncio.wait_for(gone.get(), 10) == Unsubscribed("tv:b", "server")
        rest: list[Message] = [m async for m in tv]  # it ends, saying why
        assert rest == [] and tv.unsubscribed == Unsubscribed("tv:b", "server")
        assert ida.channels == ["news:a"]
        await ida.ping()  # the rest of the link is untouched
        await pub.publish("news:a", "still")
        assert (await anext(news)).data == "still"


async def test_a_refresh_with_fewer_permissions_ends_the_channel_with_its_reason(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET)
    handed = iter([token("pat", ttl=2, join=["perm:*"]), token("pat", join=[])])

    async def next_token() -> str:
        return next(handed)

    refreshed: asyncio.Queue[float | None] = asyncio.Queue()
    async with Client(node.url, token=next_token, on_refresh=refreshed.put_nowait) as pat:
        stream = pat.subscribe("perm:x")
        await pat.join("perm:x")
        async with asyncio.timeout(10):
            async for _ in stream:
                pass
        assert stream.unsubscribed == Unsubscribed("perm:x", "permissions")
        assert pat.channels == []
        await asyncio.wait_for(refreshed.get(), 10)  # its ack comes after the unsubscribed
        assert pat.tokens.refreshes == 1


async def test_a_claimed_channel_resumes_after_a_reconnect_with_nothing_lost(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The server joins a claimed channel again right after welcome, at its current offset,
    # and the client's re-join with since replays nothing then: the client fetches the
    # messages it missed from the history, holding back the live ones meanwhile.
    caplog.set_level(logging.INFO, logger="wshub.client")
    node = make_server("--jwt-secret", SECRET)
    claim = ["feed:a"]
    handed = iter([token("kim", ttl=2, channels=claim), None, token("kim", channels=claim)])

    async def next_token() -> str | None:
        return next(handed)  # to connect; none to refresh with (the 4001 comes); then one

    subscribed: asyncio.Queue[str] = asyncio.Queue()
    async with Client(
        node.url, token=next_token, backoff_min=0.2, on_subscribed=subscribed.put_nowait
    ) as kim:
        assert await asyncio.wait_for(subscribed.get(), 10) == "feed:a"
        feed = kim.subscribe("feed:a")
        got: list[int] = []
        async with publishing(node.url, "feed:a") as acked:
            async with asyncio.timeout(15):
                while kim.reconnects == 0:
                    await until_offset(feed, (got or [0])[-1] + 1, got)
            await until_offset(feed, acked[-1] + 5, got)
        said = [r.getMessage() for r in caplog.records]
        assert any("closed (4001" in line for line in said), said
        assert got == list(range(1, got[-1] + 1))  # none lost, none twice
        assert subscribed.empty()  # the claimed channel again: not new to the application
