"""docs/protocol.md over real sockets, against a real `wshub serve`, with the websockets client."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.conftest import ServerFactory
from tests.support import Client, ServerProcess, connect, http_get


def room() -> str:
    return f"room:{uuid.uuid4().hex[:8]}"


async def still_usable(client: Client) -> None:
    assert await client.request({"type": "ping"}) == {"type": "pong", "id": client._next_id}


async def test_welcome(server: ServerProcess) -> None:
    async with connect(server.url, "alice") as a, connect(server.url) as anon:
        w = a.welcome
        assert (w["user"], w["server"]["name"], w["heartbeat"]) == ("alice", "wshub", 20)
        assert isinstance(w["session"], str)
        assert w["server"]["version"]
        assert anon.welcome["user"].startswith("anon-")
        assert len(anon.welcome["user"]) == len("anon-") + 8
        assert anon.welcome["session"] != w["session"]


async def test_invalid_user_name_is_refused_before_upgrade(server: ServerProcess) -> None:
    import websockets

    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{server.url}/ws?user=bad%20name"):
            pass
    assert info.value.response.status_code == 400


async def test_join_publish_ack_message_leave(server: ServerProcess) -> None:
    channel = room()
    async with connect(server.url, "alice") as a, connect(server.url, "bob") as b:
        joined = await a.join(channel)
        assert (joined["offset"], joined["recovered"]) == (0, False)
        assert isinstance(joined["epoch"], str)
        assert (await b.join(channel))["epoch"] == joined["epoch"]
        await a.expect("member_joined")
        reply = await b.request({"type": "publish", "channel": channel, "data": {"t": "hi"}})
        (own,) = await b.messages(1)  # the publisher receives its own message, before the ack
        assert reply == {
            "type": "ack",
            "id": reply["id"],
            "channel": channel,
            "offset": 1,
            "epoch": joined["epoch"],
        }
        (msg,) = await a.messages(1)
        assert msg == own
        assert (msg["channel"], msg["offset"], msg["from"], msg["data"]) == (
            channel,
            1,
            "bob",
            {"t": "hi"},
        )
        assert msg["epoch"] == joined["epoch"]
        assert isinstance(msg["ts"], int)
        left = await b.request({"type": "leave", "channel": channel})
        assert left == {"type": "left", "id": left["id"], "channel": channel}
        assert (await a.expect("member_left"))["user"] == "bob"
        await a.publish(channel, 2)
        await a.messages(1)
        assert (await b.request({"type": "ping"}))["type"] == "pong"  # no message in between


async def test_publish_without_joining(server: ServerProcess) -> None:
    channel = room()
    async with connect(server.url, "a") as a, connect(server.url, "b") as b:
        await b.join(channel)
        ack = await a.publish(channel, "x")
        assert ack["offset"] == 1
        assert (await b.messages(1))[0]["data"] == "x"
        await still_usable(a)


async def test_frames_without_id_get_replies_without_id(server: ServerProcess) -> None:
    async with connect(server.url) as a:
        await a.send({"type": "ping"})
        assert await a.recv() == {"type": "pong"}
        await a.send({"type": "join", "channel": room()})
        assert "id" not in await a.expect("joined")
        await a.send("nope")
        assert "id" not in await a.expect("error")


async def test_send_reaches_every_connection_of_the_user(server: ServerProcess) -> None:
    async with (
        connect(server.url, "carol") as c1,
        connect(server.url, "carol") as c2,
        connect(server.url, "dave") as d,
    ):
        ack = await d.request({"type": "send", "to": "carol", "data": {"k": [1]}})
        assert ack == {"type": "ack", "id": ack["id"]}
        for c in (c1, c2):
            direct = await c.expect("direct")
            assert (direct["from"], direct["data"]) == ("dave", {"k": [1]})
            assert isinstance(direct["ts"], int)
        nobody = await d.request({"type": "send", "to": "nobody-here", "data": 1})
        assert nobody["type"] == "ack"


async def test_presence_and_member_events(server: ServerProcess) -> None:
    channel = room()
    async with connect(server.url, "p1") as p1, connect(server.url, "p2") as p2:
        await p1.join(channel, meta={"name": "Pat"})
        async with connect(server.url, "p2") as p2b:
            await p2.join(channel, meta={"v": 1})
            event = await p1.expect("member_joined")
            assert event == {
                "type": "member_joined",
                "channel": channel,
                "user": "p2",
                "meta": {"v": 1},
            }
            await p2b.join(channel, meta={"v": 2})  # second connection: no new event
            presence = await p1.request({"type": "presence", "channel": channel})
            assert presence["channel"] == channel
            assert sorted(presence["members"], key=lambda m: m["user"]) == [
                {"user": "p1", "meta": {"name": "Pat"}, "connections": 1},
                {"user": "p2", "meta": {"v": 2}, "connections": 2},
            ]
        # p2b gone, p2 still there: no member_left. Once presence counts one connection,
        # the node has handled p2b's end, and a member_left would already be on its way.
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            presence = await p1.request({"type": "presence", "channel": channel})
            if {m["user"]: m["connections"] for m in presence["members"]}["p2"] == 1:
                break
            assert asyncio.get_running_loop().time() < deadline
        await p1.request({"type": "ping"})
        assert [f for f in p1._backlog if f["type"] == "member_left"] == []
        await p2.request({"type": "leave", "channel": channel})
        left = await p1.expect("member_left")
        assert (left["user"], left["meta"]) == ("p2", {"v": 2})
        presence = await p1.request({"type": "presence", "channel": channel})
        assert [m["user"] for m in presence["members"]] == ["p1"]


async def test_history(server: ServerProcess) -> None:
    channel = room()
    async with connect(server.url) as a:
        for i in range(10):
            await a.publish(channel, i)
        h = await a.request({"type": "history", "channel": channel})
        assert [m["data"] for m in h["messages"]] == list(range(10))
        assert all(m["type"] == "message" for m in h["messages"])
        epoch = h["epoch"]
        page = await a.request(
            {
                "type": "history",
                "channel": channel,
                "limit": 3,
                "since": {"offset": 4, "epoch": epoch},
            }
        )
        assert [m["offset"] for m in page["messages"]] == [5, 6, 7]
        last = await a.request({"type": "history", "channel": channel, "limit": 2})
        assert [m["offset"] for m in last["messages"]] == [9, 10]
        void = await a.request(
            {
                "type": "history",
                "channel": channel,
                "limit": 2,
                "since": {"offset": 4, "epoch": "not-" + epoch},
            }
        )
        assert ([m["offset"] for m in void["messages"]], void["epoch"]) == ([9, 10], epoch)
        empty = await a.request({"type": "history", "channel": room()})
        assert empty["messages"] == []


async def test_history_size_and_ttl(make_server: ServerFactory) -> None:
    srv = make_server("--history-size", "5", "--history-ttl", "1")
    channel = room()
    async with connect(srv.url) as a:
        for i in range(8):
            await a.publish(channel, i)
        h = await a.request({"type": "history", "channel": channel})
        assert [m["offset"] for m in h["messages"]] == [4, 5, 6, 7, 8]
        await asyncio.sleep(1.2)
        h = await a.request({"type": "history", "channel": channel})
        assert h["messages"] == []
        # The position survives the expiry of the history.
        at_top = await a.join(channel, since={"offset": 8, "epoch": h["epoch"]})
        assert (at_top["recovered"], at_top["offset"]) == (True, 8)


async def test_300_messages_arrive_in_offset_order(server: ServerProcess) -> None:
    channel = room()
    async with connect(server.url) as sub, connect(server.url) as pub:
        await sub.join(channel)
        for i in range(300):
            await pub.send({"type": "publish", "channel": channel, "data": i})
        got = await sub.messages(300)
        assert [m["offset"] for m in got] == list(range(1, 301))
        assert [m["data"] for m in got] == list(range(300))


async def test_recovery_after_reconnect(server: ServerProcess) -> None:
    channel = room()
    async with connect(server.url, "pub") as pub:
        async with connect(server.url, "sub") as sub:
            joined = await sub.join(channel)
            await pub.publish(channel, "seen")
            (seen,) = await sub.messages(1)
        for i in range(5):  # published while the subscriber is away
            await pub.publish(channel, f"missed-{i}")
        async with connect(server.url, "sub") as sub:
            since = {"offset": seen["offset"], "epoch": joined["epoch"]}
            await sub.send({"type": "join", "channel": channel, "id": 1, "since": since})
            rejoined = await sub.expect("joined")
            assert (rejoined["recovered"], rejoined["offset"]) == (True, 6)
            await pub.publish(channel, "new")
            got = await sub.messages(6)
            assert [m["data"] for m in got] == [f"missed-{i}" for i in range(5)] + ["new"]
            assert [m["offset"] for m in got] == list(range(2, 8))
        async with connect(server.url, "sub") as sub:
            wrong = await sub.join(channel, since={"offset": 1, "epoch": "wrong"})
            assert (wrong["recovered"], wrong["offset"]) == (False, 7)
            await pub.publish(channel, "live")
            assert [m["data"] for m in await sub.messages(1)] == ["live"]
        async with connect(server.url, "sub") as sub:
            beyond = await sub.join(channel, since={"offset": 99, "epoch": joined["epoch"]})
            assert beyond["recovered"] is False
        async with connect(server.url, "sub") as sub:
            top = await sub.join(channel, since={"offset": 8, "epoch": joined["epoch"]})
            assert top["recovered"] is True
            await still_usable(sub)


async def test_recovery_fails_when_history_was_evicted(make_server: ServerFactory) -> None:
    srv = make_server("--history-size", "3")
    channel = room()
    async with connect(srv.url) as pub, connect(srv.url) as sub:
        joined = await sub.join(channel)
        await pub.publish(channel, 1)
        await sub.messages(1)
        await sub.request({"type": "leave", "channel": channel})
        for i in range(5):  # offsets 2..6; only 4..6 are kept
            await pub.publish(channel, i)
        rec = await sub.join(channel, since={"offset": 1, "epoch": joined["epoch"]})
        assert (rec["recovered"], rec["offset"]) == (False, 6)
        await pub.publish(channel, "next")
        (msg,) = await sub.messages(1)
        assert msg["offset"] == 7  # nothing from history was sent


BAD_INPUTS = [
    ("not json at all", "bad_json"),
    ("[1, 2, 3]", "bad_json"),
    ('"just a string"', "bad_json"),
    ('{"type": "join", "channel": 42}', "bad_request"),
    ('{"type": "publish", "channel": "a", "data": 1, "id": {"no": 1}}', "bad_request"),
    ('{"type": "publish", "channel": "a"}', "bad_request"),
    ('{"type": "send", "to": 5, "data": 1}', "bad_request"),
    ('{"type": "history", "channel": "a", "limit": "ten"}', "bad_request"),
    ('{"type": "join", "channel": "no spaces allowed"}', "bad_request"),
    ('{"type": "join", "channel": "' + "c" * 200 + '"}', "bad_request"),
    ('{"type": "join", "channel": "new\\nline"}', "bad_request"),
    ('{"type": "join"}', "bad_request"),
    ('{"channel": "a"}', "bad_request"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "leave", "channel": "never-joined"}', "not_joined"),
]


@pytest.mark.parametrize(("text", "code"), BAD_INPUTS)
async def test_bad_input_gets_its_code_and_the_connection_stays(
    server: ServerProcess, text: str, code: str
) -> None:
    async with connect(server.url) as a:
        await a.send(text)
        err = await a.expect("error")
        assert err["code"] == code
        assert err["message"]
        await still_usable(a)


async def test_error_replies_carry_the_frame_id(server: ServerProcess) -> None:
    async with connect(server.url) as a:
        await a.send({"type": "dance", "id": "abc"})
        assert (await a.expect("error"))["id"] == "abc"
        await a.send({"type": "join", "channel": 1, "id": 7})
        assert (await a.expect("error"))["id"] == 7


async def test_binary_frame_is_bad_frame(server: ServerProcess) -> None:
    async with connect(server.url) as a:
        await a.ws.send(b'{"type": "ping"}')
        err = await a.expect("error")
        assert err["code"] == "bad_frame"
        await still_usable(a)


async def test_healthz(server: ServerProcess) -> None:
    status, body = await http_get(f"{server.http}/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
