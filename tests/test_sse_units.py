"""The SSE event ids and the stream's position, without a server."""

from __future__ import annotations

import asyncio
import json

import pytest

from wshub import protocol
from wshub.protocol.event_id import MAX_EVENT_ID, format_event_id, parse_event_id
from wshub.transport.sse import SseSocket, encode_event


def test_an_id_names_every_channel_and_parses_back() -> None:
    positions = {"chat:lobby": (42, "9f3c1a2b"), "a.b-c_d@e": (0, "00ff")}
    text = format_event_id(positions)
    assert text == "chat:lobby~42~9f3c1a2b~a.b-c_d@e~0~00ff"
    assert parse_event_id(text) == positions
    assert parse_event_id("") == {}


@pytest.mark.parametrize(
    "text",
    ["a~1", "a~x~e", "a~-1~e", "bad name~1~e", "a~1~e~b", "a~1~ep~och", "a~1~" + "e" * 65],
)
def test_what_is_not_an_id_is_refused(text: str) -> None:
    assert parse_event_id(text) is None


def test_an_id_too_long_to_be_one_is_not_parsed() -> None:
    assert parse_event_id("a~1~e~" * (MAX_EVENT_ID // 6 + 1)) is None


def test_an_event_is_one_data_line_even_for_json_with_line_breaks() -> None:
    assert encode_event("message", '{"a":\n 1,\r\n"b": 2}') == (
        b'event: message\ndata: {"a":1,"b":2}\n\n'
    )
    assert encode_event("joined", "{}", "a~1~e") == b"event: joined\nid: a~1~e\ndata: {}\n\n"


def _frame(event: bytes) -> tuple[str | None, dict[str, object]]:
    lines = dict(line.split(": ", 1) for line in event.decode().strip().split("\n"))
    return lines.get("id"), json.loads(lines["data"])


def test_the_position_follows_joins_messages_and_leaves() -> None:
    socket = SseSocket(resume={"a": (3, "e1")})

    def event_id(frame: protocol.ServerFrame) -> str | None:
        return _frame(socket.event_for(protocol.encode(frame)))[0]

    # A recovered join keeps the client's own position until the missed messages come.
    assert event_id(protocol.Joined(channel="a", offset=5, epoch="e1", recovered=True)) == (
        "a~3~e1"
    )
    assert event_id(protocol.Subscribed(channel="b", offset=7, epoch="e2")) == "a~3~e1~b~7~e2"
    message = protocol.Message(channel="a", offset=4, epoch="e1", from_=None, data=1, ts=1)
    assert event_id(message) == "a~4~e1~b~7~e2"
    assert event_id(protocol.Unsubscribed(channel="b", reason="server")) == "a~4~e1"
    assert event_id(protocol.Left(channel="a")) == ""
    # A join that is not recovered starts from the channel's current offset.
    assert event_id(protocol.Joined(channel="c", offset=9, epoch="e3", recovered=False)) == (
        "c~9~e3"
    )
    assert event_id(protocol.Pong()) is None
    assert socket.positions == {"c": (9, "e3")}


async def test_a_drop_ends_the_stream_at_once_and_aborts() -> None:
    aborted: list[bool] = []
    socket = SseSocket(abort=lambda: aborted.append(True))
    await socket.send_text(protocol.encode(protocol.Pong()))  # fills the one-event hand-off
    socket.drop(4008, "slow consumer")
    events = [event async for event in socket.events()]
    assert (events, aborted) == ([], [True])
    await socket.send_text("{}")  # after the end: nothing is queued, nothing waits
    await asyncio.wait_for(socket.close(1000, ""), 1)
