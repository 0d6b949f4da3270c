"""Caps on the state one client can make a node hold, against real ``wshub serve`` processes.

Memory is read from the node's ``/proc/PID/status`` (VmRSS): what the operating system sees,
which is what an operator's alarm sees.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.conftest import ServerFactory
from tests.support import Client, Frame, ServerProcess, connect

MB = 2**20


def rss(proc: ServerProcess) -> int:
    """The node's resident memory in bytes."""
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def pipelined(
    client: Client, frames: Sequence[Mapping[str, object]], batch: int = 500
) -> list[Frame]:
    """Send ``frames`` in batches and collect one reply per frame (the node answers in order)."""
    replies: list[Frame] = []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        for frame in chunk:
            await client.send(dict(frame))
        for _ in chunk:
            replies.append(await client.recv(timeout=20))
    return replies


async def test_reads_of_channels_not_joined_are_budgeted_and_joined_ones_free(
    make_server: ServerFactory,
) -> None:
    srv = make_server("--max-channels", "20", "--unjoined-read-rate", "0.5")
    async with connect(srv.url, "reader") as a:
        await a.join("mine")
        frames: list[dict[str, object]] = [
            {"type": "history", "channel": f"other{n}", "id": n} for n in range(30)
        ]
        replies = await pipelined(a, frames)
        answered = [r for r in replies if r["type"] == "history"]
        refused = [r for r in replies if r.get("code") == "limit"]
        assert 20 <= len(answered) <= 21, replies  # a burst of --max-channels
        assert len(answered) + len(refused) == 30
        assert "join the channel" in refused[0]["message"]
        # The budget is spent, yet the joined channel is read as often as wanted.
        for _ in range(5):
            assert (await a.request({"type": "presence", "channel": "mine"}))["type"] == "presence"
            assert (await a.request({"type": "history", "channel": "mine"}))["type"] == "history"


async def test_presence_meta_over_the_limit_is_too_large_and_not_kept(
    make_server: ServerFactory,
) -> None:
    srv = make_server("--max-meta-bytes", "1000")
    async with connect(srv.url, "meta") as a, connect(srv.url, "seer") as b:
        big = {"blob": "x" * 1000}
        err = await a.request({"type": "join", "channel": "room", "meta": big})
        assert (err["type"], err["code"]) == ("error", "too_large"), err
        await b.join("room")
        members = (await b.request({"type": "presence", "channel": "room"}))["members"]
        assert [m["user"] for m in members] == ["seer"]
        await a.join("room", meta={"blob": "x" * 900})  # under the limit: accepted
        members = (await b.request({"type": "presence", "channel": "room"}))["members"]
        assert sorted(m["user"] for m in members) == ["meta", "seer"]


async def test_distinct_channel_names_leave_nothing_behind(make_server: ServerFactory) -> None:
    """30,000 ``history`` reads of distinct names and 10,000 joins and leaves of distinct
    channels: before, each name left about 1 KB on the node for an hour."""
    srv = make_server("--unjoined-read-rate", "0")
    async with connect(srv.url, "namer") as a:
        warm = [{"type": "history", "channel": f"warm{n}"} for n in range(3000)]
        await pipelined(a, warm)
        before = rss(srv)
        reads = [{"type": "history", "channel": f"name{n}"} for n in range(30_000)]
        assert {r["type"] for r in await pipelined(a, reads)} == {"history"}
        churn: list[dict[str, object]] = []
        for n in range(10_000):
            churn += [{"type": "join", "channel": f"c{n}"}, {"type": "leave", "channel": f"c{n}"}]
        assert {r["type"] for r in await pipelined(a, churn)} == {"joined", "left"}
        grown = rss(srv) - before
    assert grown < 8 * MB, f"the node grew by {grown / MB:.1f} MB"


async def test_history_holds_each_message_once_not_its_encoded_frames(
    make_server: ServerFactory,
) -> None:
    """Before, a history read cached every message's encoded text on the message kept in
    history, and a fan-out its text and wire bytes: up to three times the data, for as long
    as the history lasts."""
    # A byte budget big enough for one reply of the whole history (48 MB).
    srv = make_server(
        "--history-size", "1000", "--history-ttl", "600", "--queue-bytes", "100000000"
    )
    payload = "x" * 60_000
    count = 800
    data = count * len(json.dumps(payload))
    async with (
        connect(srv.url, "pub", max_size=None) as pub,
        connect(srv.url, "sub", max_size=None) as sub,
    ):
        warm = [{"type": "publish", "channel": "warm", "data": payload}] * 100
        await pipelined(pub, warm, batch=100)
        await pub.request({"type": "history", "channel": "warm", "limit": 1000})
        # Nobody subscribed: then one history read of it all.
        frames = [{"type": "publish", "channel": "quiet", "data": payload}] * count
        assert {r["type"] for r in await pipelined(pub, frames, batch=100)} == {"ack"}
        before_read = rss(srv)
        history = await pub.request({"type": "history", "channel": "quiet", "limit": 1000})
        assert len(history["messages"]) == count
        del history
        read_cost = rss(srv) - before_read
        # A subscriber gets every message as it is published.
        await sub.join("busy")
        before_fan_out = rss(srv)
        frames = [{"type": "publish", "channel": "busy", "data": payload}] * count
        assert {r["type"] for r in await pipelined(pub, frames, batch=100)} == {"ack"}
        await sub.messages(count, timeout=30)
        kept = rss(srv) - before_fan_out
    assert read_cost < 0.25 * data, (
        f"a history read of {data / MB:.0f} MB: +{read_cost / MB:.0f} MB"
    )
    assert kept < 2.4 * data, f"{kept / MB:.0f} MB for {data / MB:.0f} MB of messages"


async def test_asyncapi_names_the_served_address_not_the_host_header(
    server: ServerProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /asyncapi.json HTTP/1.1\r\nHost: evil.example:666\r\nConnection: close\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["servers"]["wshub"]["host"] == f"127.0.0.1:{server.port}"
    assert b"evil" not in answer
