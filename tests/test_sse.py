"""``GET /sse`` on real `wshub serve` processes: the stream, its ids and resume, refusals,
heartbeats, slow consumers, the drain, and the figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
import urllib.request
import uuid

import pytest

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, token
from tests.sse_support import refused, sse
from tests.support import RedisProcess, ServerProcess, connect


def _channel() -> str:
    return f"sse:{uuid.uuid4().hex[:8]}"


async def test_one_event_per_frame_with_ids_naming_every_channel(server: ServerProcess) -> None:
    a, b = _channel(), _channel()
    async with sse(server.http, a, b, user="eve") as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        welcome = await stream.next()
        assert (welcome.event, welcome.data["user"], welcome.id) == ("welcome", "eve", None)
        joined = [await stream.next(), await stream.next()]
        assert [(e.event, e.data["channel"]) for e in joined] == [("joined", a), ("joined", b)]
        async with connect(server.url, "pub") as pub:
            await pub.publish(a, {"n": 1})
            await pub.publish(b, {"n": 2})
        first, second = await stream.messages(2)
        epoch = first.data["epoch"]
        assert (first.data["data"], second.data["data"]) == ({"n": 1}, {"n": 2})
        assert first.id == f"{a}~1~{epoch}~{b}~0~{epoch}"
        assert second.id == f"{a}~1~{epoch}~{b}~1~{epoch}"


async def test_json_published_with_line_breaks_is_one_data_line(server: ServerProcess) -> None:
    channel = _channel()
    async with sse(server.http, channel) as stream:
        await stream.until("joined")
        async with connect(server.url, "pub") as pub:
            text = '{"type": "publish", "channel": "C",\n "data": {"a":\n 1}}'
            await pub.send(text.replace("C", channel))
            (message,) = await stream.messages(1)
    assert (message.data["data"], message.data_lines) == ({"a": 1}, 1)


async def test_last_event_id_resumes_every_channel_on_another_node(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    a = make_server("--broker", redis.url)
    b = make_server("--broker", redis.url)
    one, two = _channel(), _channel()
    async with connect(a.url, "pub") as pub:
        async with sse(a.http, one, two) as stream:
            await stream.until("joined")
            await stream.until("joined")
            for n in range(3):
                await pub.publish(one, n)
            await pub.publish(two, "x")
            await stream.messages(4)
            last = stream.last_id
        assert last is not None
        for n in range(3, 6):  # missed while away
            await pub.publish(one, n)
        await pub.publish(two, "y")
        expected = [(one, 3), (one, 4), (one, 5), (two, "y")]
        for how in ("header", "query"):
            extra = {"last_event_id": last} if how == "query" else {}
            header = {"Last-Event-ID": last} if how == "header" else None
            async with sse(b.http, one, two, headers=header, **extra) as stream:
                # Each channel's missed messages follow its own joined.
                events = [await stream.next() for _ in range(3 + len(expected))][1:]
                joined = [e for e in events if e.event == "joined"]
                assert [e.data["recovered"] for e in joined] == [True, True]
                missed = [e for e in events if e.event == "message"]
                got = [(m.data["channel"], m.data["data"]) for m in missed]
                assert got == expected
                await pub.publish(one, "live")
                (live,) = await stream.messages(1)
                assert live.data["data"] == "live"  # nothing repeated before it
                expected.insert(3, (one, "live"))  # missed by the same id, the next time


async def test_a_bad_last_event_id_starts_afresh(server: ServerProcess) -> None:
    channel = _channel()
    async with sse(server.http, channel, headers={"Last-Event-ID": "not~an"}) as stream:
        joined = await stream.until("joined")
    assert joined.data["recovered"] is False


async def test_refusals_come_before_the_stream(make_server: ServerFactory) -> None:
    node = make_server("--max-connections", "1", "--max-channels", "3", WSHUB_JWT_SECRET=SECRET)
    assert (await refused(node.http, "a")).status_code == 401
    bad = await refused(node.http, "a", token="forged")
    assert bad.status_code == 401
    ann = token("ann", join=["chat:*"])
    forbidden = await refused(node.http, "chat:x", "secret:y", token=ann)
    assert (forbidden.status_code, "secret:y" in forbidden.text) == (403, True)
    assert (await refused(node.http, "bad name", token=ann)).status_code == 400
    assert (
        await refused(node.http, *(f"chat:{n}" for n in range(4)), token=ann)
    ).status_code == 400
    async with sse(node.http, "chat:x", token=ann) as stream:
        await stream.until("joined")
        full = await refused(node.http, "chat:x", token=ann)  # the stream holds the only place
        assert (full.status_code, full.headers["retry-after"]) == (503, "1")
    # The refused 403 gave its place back: a stream is accepted again.
    async with sse(node.http, "chat:x", headers={"Authorization": f"Bearer {ann}"}) as stream:
        assert (await stream.next()).data["user"] == "ann"


async def test_the_stream_counts_against_the_websocket_cap(make_server: ServerFactory) -> None:
    node = make_server("--max-connections", "1")
    async with sse(node.http, "a") as stream:
        await stream.until("joined")
        with pytest.raises(Exception, match="503"):
            async with connect(node.url, "other"):
                pass


async def test_heartbeat_comments(make_server: ServerFactory) -> None:
    node = make_server(WSHUB_PING_INTERVAL="0.2")
    async with sse(node.http) as stream:
        assert (await stream.next()).event == "welcome"
        with pytest.raises(TimeoutError):
            await stream.next(timeout=1.0)  # no event comes: only comments
    assert stream.comments and set(stream.comments) == {"ping"}


async def test_metrics_and_dashboard_count_streams(make_server: ServerFactory) -> None:
    node = make_server(WSHUB_API_KEY="k")
    async with sse(node.http, "a") as stream:
        await stream.until("joined")
        metrics = await asyncio.to_thread(_read, f"{node.http}/metrics")
        assert "wshub_sse_streams 1.0" in metrics
        stats = json.loads(await asyncio.to_thread(_read, f"{node.http}/admin/stats", "k"))
        assert stats["nodes"][0]["sse_streams"] == 1
        assert stats["nodes"][0]["connections"] == 1


def _read(url: str, key: str | None = None) -> str:
    headers = {"Authorization": f"apikey {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        body: bytes = r.read()
        return body.decode()


@pytest.mark.slow
async def test_a_stream_that_is_not_read_is_ended_as_a_slow_consumer(
    make_server: ServerFactory,
) -> None:
    node = make_server("--queue-size", "8")
    channel = _channel()
    raw = socket.create_connection(("127.0.0.1", node.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        async with connect(node.url, "watcher") as watcher, connect(node.url, "pub") as pub:
            await watcher.join(channel)
            request = f"GET /sse?channel={channel}&user=sleepy HTTP/1.1\r\nHost: x\r\n\r\n"
            raw.sendall(request.encode())  # and never read
            joined = await watcher.expect("member_joined")
            assert joined["user"] == "sleepy"
            blob = "x" * 60_000

            async def member_left() -> dict[str, object]:
                while True:
                    frame = await watcher.recv(timeout=30)
                    if frame["type"] == "member_left":
                        return frame

            leaving = asyncio.create_task(member_left())
            for _ in range(400):
                await pub.publish(channel, blob)
                if leaving.done():
                    break
            left = await asyncio.wait_for(leaving, 10)
            assert left["user"] == "sleepy"
        # The TCP connection is cut, not left to drain: reading reaches its end at once,
        # where a plain close would keep it for as long as TCP retries (minutes).
        raw.settimeout(5)
        deadline = time.monotonic() + 5
        with pytest.raises(ConnectionResetError):
            _read_until(raw, deadline)
    finally:
        raw.close()
    assert "without completing response" not in node.log()


def _read_until(raw: socket.socket, deadline: float) -> None:
    while raw.recv(1 << 20) and time.monotonic() < deadline:
        pass


@pytest.mark.slow
async def test_streams_end_cleanly_in_a_drain(make_server: ServerFactory) -> None:
    node = make_server("--drain-seconds", "0.5")
    async with sse(node.http, "a") as stream:
        await stream.until("joined")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        assert await stream.ended()
    assert await asyncio.to_thread(node.proc.wait, 10) == 0


async def test_a_stream_whose_join_fails_on_the_broker_ends_so_that_it_comes_back(
    make_server: ServerFactory, redis: RedisProcess
) -> None:
    node = make_server("--broker", redis.url, "--reply-timeout", "1")
    redis.stop()
    async with sse(node.http, "a") as stream:
        assert (await stream.next(10)).event == "welcome"
        error = await stream.until("error", timeout=15)
        assert error.data["code"] in ("unavailable", "timeout")
        assert await stream.ended(10)
    redis.start()
    # What EventSource does next: come back until the broker is back and the join succeeds.
    deadline = time.monotonic() + 30
    while True:
        async with sse(node.http, "a") as stream:
            with contextlib.suppress(EOFError):
                event = await stream.until("joined", timeout=10)
                break
        assert time.monotonic() < deadline, "the stream never joined again"
        await asyncio.sleep(0.5)
    assert event.data["channel"] == "a"


async def test_a_stream_ends_when_its_token_expires(make_server: ServerFactory) -> None:
    node = make_server(WSHUB_JWT_SECRET=SECRET)
    async with sse(node.http, "chat:a", token=token("ann", ttl=2, join=["chat:*"])) as stream:
        assert (await stream.until("joined")).data["channel"] == "chat:a"
        assert await stream.ended(10)
