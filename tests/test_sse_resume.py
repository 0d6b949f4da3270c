"""``Last-Event-ID`` resumes the channels the server placed a stream in (``POST
/api/subscribe``) too, on real ``wshub serve`` processes, read with httpx."""

from __future__ import annotations

import httpx

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, token
from tests.sse_support import Stream, sse
from tests.support import connect

KEY = "an-api-key-for-the-sse-resume-tests"


async def _subscribe(base: str, user: str, channel: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as api:
        headers = {"Authorization": f"apikey {KEY}"}
        body = {"user": user, "channel": channel}
        response = await api.post("/api/subscribe", json=body, headers=headers)
    assert response.status_code < 300, response.text


async def _placed_in(stream: Stream, base: str, user: str, channel: str) -> None:
    await stream.until("joined")
    await _subscribe(base, user, channel)
    assert (await stream.until("subscribed")).data["channel"] == channel


async def test_a_channel_placed_by_the_api_resumes_with_its_missed_messages_first(
    make_server: ServerFactory,
) -> None:
    node = make_server(WSHUB_API_KEY=KEY)
    async with connect(node.url, "pub") as pub:
        async with sse(node.http, "sse:own", user="sam") as stream:
            await _placed_in(stream, node.http, "sam", "sse:placed")
            for n in range(2):
                await pub.publish("sse:placed", n)
            assert [m.data["data"] for m in await stream.messages(2)] == [0, 1]
            last = stream.last_id
        assert last is not None and "sse:placed~2~" in last
        for n in range(2, 5):  # missed while away
            await pub.publish("sse:placed", n)
        async with sse(node.http, "sse:own", user="sam", headers={"Last-Event-ID": last}) as back:
            assert (await back.next()).event == "welcome"
            own, placed = await back.next(), await back.next()
            assert (own.event, own.data["channel"]) == ("joined", "sse:own")
            assert (placed.event, placed.data["channel"]) == ("joined", "sse:placed")
            assert placed.data["recovered"] is True
            missed = await back.messages(3)
            assert [(m.data["channel"], m.data["data"]) for m in missed] == [
                ("sse:placed", 2),
                ("sse:placed", 3),
                ("sse:placed", 4),
            ]
            await pub.publish("sse:placed", "live")
            (live,) = await back.messages(1)
            assert live.data["data"] == "live"  # nothing repeated before it
            assert live.id is not None and "sse:placed~6~" in live.id


async def test_a_placed_channel_the_user_may_not_join_is_dropped_with_unsubscribed(
    make_server: ServerFactory,
) -> None:
    node = make_server(WSHUB_API_KEY=KEY, WSHUB_JWT_SECRET=SECRET)
    ann = token("ann", join=["chat:*"])
    async with sse(node.http, "chat:a", token=ann) as stream:
        await _placed_in(stream, node.http, "ann", "tv:b")
        last = stream.last_id
    assert last is not None and "tv:b~" in last
    async with sse(node.http, "chat:a", token=ann, headers={"Last-Event-ID": last}) as back:
        assert (await back.next()).event == "welcome"
        joined = await back.next()
        assert (joined.event, joined.data["channel"]) == ("joined", "chat:a")
        dropped = await back.next()
        assert (dropped.event, dropped.data) == (
            "unsubscribed",
            {"type": "unsubscribed", "channel": "tv:b", "reason": "permissions"},
        )
        # Its id names the resumed channel alone: the next reconnect does not ask again.
        assert dropped.id is not None and dropped.id.startswith("chat:a~")
        assert "tv:b" not in dropped.id


async def test_placed_channels_beyond_max_channels_are_dropped(
    make_server: ServerFactory,
) -> None:
    node = make_server("--max-channels", "2", WSHUB_API_KEY=KEY)
    async with sse(node.http, "sse:x", user="max") as stream:
        await _placed_in(stream, node.http, "max", "sse:y")
        last = stream.last_id
    assert last is not None
    forged = f"{last}~sse:z~0~{last.rsplit('~', 1)[1]}"  # a third channel the id names
    async with sse(node.http, "sse:x", user="max", headers={"Last-Event-ID": forged}) as back:
        events = [await back.next() for _ in range(4)]
    assert [(e.event, e.data.get("channel")) for e in events] == [
        ("welcome", None),
        ("joined", "sse:x"),
        ("joined", "sse:y"),
        ("unsubscribed", "sse:z"),
    ]
    assert events[3].data["reason"] == "server"
