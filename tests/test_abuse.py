"""Hostile clients over real sockets: fuzzed frames and a flood never hurt their neighbours."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ROOT, Client, Frame, ServerProcess, connect
from wshub import protocol

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
channels = st.one_of(
    st.text(max_size=140),
    st.sampled_from(["calm:room", "fuzz:a", "a" * 128, "a" * 129, "x\n", "a\u0000b"]),
    json_values,
)
typed_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(protocol.CLIENT_TYPES))},
    optional={
        "id": json_values,
        "channel": channels,
        "to": st.text(max_size=12) | json_values,
        "data": json_values,
        "meta": json_values,
        "limit": st.integers() | json_values,
        "since": st.fixed_dictionaries({"offset": st.integers(), "epoch": st.text(max_size=8)})
        | json_values,
    },
).map(lambda obj: json.dumps(obj))
depths = st.integers(1, 3000)
wire_frames: st.SearchStrategy[str | bytes] = st.one_of(
    typed_frames,
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=64),  # a binary frame
    depths.map(lambda d: '{"type":"publish","channel":"fuzz:a","data":' + "[" * d + "]" * d + "}"),
    depths.map(lambda d: "{" * d),
    st.integers(300, 5000).map(
        lambda n: '{"type":"history","channel":"a","limit":1' + "0" * n + "}"
    ),
    st.text(max_size=3).map(lambda s: '{"type":"join","channel":"calm:' + s + '\\u0007"}'),
)


async def pong(client: Client, frame_id: str) -> list[Frame]:
    """Everything the server sent until the ``pong`` for ``frame_id``."""
    await client.send({"type": "ping", "id": frame_id})
    got: list[Frame] = []
    while True:
        frame = await client.recv(timeout=10)
        if frame == {"type": "pong", "id": frame_id}:
            return got
        got.append(frame)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(wire_frames, min_size=1, max_size=30))
def test_fuzzed_frames_never_kill_a_neighbour(
    server: ServerProcess, frames: list[str | bytes]
) -> None:
    async def scenario() -> None:
        async with connect(server.url, "neighbour") as calm, connect(server.url, "fuzzer") as fuzz:
            await calm.join("calm:room")
            for frame in frames:
                await fuzz.ws.send(frame)
            replies = await pong(fuzz, "end")
            errors = [r for r in replies if r["type"] == "error"]
            assert all(e["code"] != "internal" for e in errors), errors
            assert all(e["message"] for e in errors)
            # The neighbour's connection works as if nothing happened.
            ack = await calm.publish("calm:room", {"still": "here"})
            seen = [f for f in await pong(calm, "calm") if f["type"] != "member_joined"]
            seen += list(calm._backlog)
            assert not [f for f in seen if f["type"] == "error"], seen
            mine = [f for f in seen if f["type"] == "message" and f["from"] == "neighbour"]
            assert [m["offset"] for m in mine] == [ack["offset"]]

    asyncio.run(scenario())


async def test_invalid_utf8_in_a_text_frame_closes_only_that_connection(
    server: ServerProcess,
) -> None:
    async with connect(server.url, "calm2") as calm, connect(server.url, "bad") as bad:
        await bad.ws.send(b'{"type":"ping","id":"\xff"}', text=True)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await bad.recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1007  # invalid frame payload data, per RFC 6455
        assert (await calm.request({"type": "ping"}))["type"] == "pong"


# --- the flood test --------------------------------------------------------------------------

RATE = 200
"""Frames per second allowed per connection; the flooder sends ten times that."""
SAMPLES = 150


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    proc = ServerProcess("--rate-limit", str(RATE)).start()
    yield proc
    proc.stop()


async def latencies(sender: Client, receiver: Client, count: int) -> list[float]:
    """Publish ``count`` messages, one at a time, paced under the rate limit; for each, the
    seconds from the send until the receiver has it (and the sender its ack)."""
    out: list[float] = []
    for n in range(count):
        start = time.perf_counter()
        ack = await sender.publish("room:flood", {"n": n})
        while True:
            frame = await receiver.recv(timeout=10)
            assert frame["type"] != "error", frame
            if frame["type"] == "message" and frame["offset"] == ack["offset"]:
                break
        out.append(time.perf_counter() - start)
        await asyncio.sleep(2 / RATE)  # half the allowed rate: the chatters never hit it
    return out


async def test_a_flooder_at_ten_times_the_rate_limit_does_not_slow_the_others(
    limited: ServerProcess,
) -> None:
    async with connect(limited.url, "ada") as ada, connect(limited.url, "bob") as bob:
        await ada.join("room:flood")
        await bob.join("room:flood")
        await latencies(ada, bob, 30)  # warm up both ends
        normal = await latencies(ada, bob, SAMPLES)

        flooder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.flood_client",
            f"{limited.url}/ws?user=flood",
            "room:flood",
            str(10 * RATE),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert flooder.stdout is not None and flooder.stdin is not None
        try:
            ready = await asyncio.wait_for(flooder.stdout.readline(), 20)
            assert ready.strip() == b"ready"
            flooded = await latencies(ada, bob, SAMPLES)
        finally:
            flooder.stdin.close()
            out, _ = await asyncio.wait_for(flooder.communicate(), 20)
        summary: dict[str, Any] = json.loads(out)
        print(
            f"latency median {statistics.median(normal) * 1e3:.3f} ms normally, "
            f"{statistics.median(flooded) * 1e3:.3f} ms under the flood; flooder: {summary}"
        )

        # The flooder really flooded, and was really limited.
        rate = summary["sent"] / summary["seconds"]
        assert rate > 8 * RATE, summary
        # Answered with one rate_limited a second, not one per frame: silence costs nothing.
        assert 1 <= summary["replies"]["rate_limited"] <= summary["seconds"] + 2, summary
        assert summary["replies"].get("ack", 0) < summary["sent"] // 2, summary
        # The others saw no errors (checked as they read) and kept their latency.
        assert statistics.median(flooded) <= 2 * statistics.median(normal), (
            f"median latency {statistics.median(normal) * 1e3:.2f} ms normally, "
            f"{statistics.median(flooded) * 1e3:.2f} ms under the flood"
        )
