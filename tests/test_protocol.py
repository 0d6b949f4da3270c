"""The protocol layer alone: every client frame, every server frame, every decode error."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET, Raw

from wshub import protocol
from wshub.protocol import ErrorCode, FrameError, decode_client_frame


def decode_error(text: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode_client_frame(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "cls", "fields"),
    [
        ('{"type":"join","channel":"chat:lobby"}', protocol.Join, {"channel": "chat:lobby"}),
        ('{"type":"leave","channel":"a","id":"x"}', protocol.Leave, {"channel": "a", "id": "x"}),
        ('{"type":"publish","channel":"a","data":null,"id":7}', protocol.Publish, {"id": 7}),
        ('{"type":"send","to":"bob","data":[1]}', protocol.Send, {"to": "bob"}),
        ('{"type":"presence","channel":"a"}', protocol.PresenceRequest, {"channel": "a"}),
        ('{"type":"history","channel":"a","limit":5}', protocol.HistoryRequest, {"limit": 5}),
        ('{"type":"ping"}', protocol.Ping, {"id": UNSET}),
        ('{"type":"ping","extra":{"ignored":true}}', protocol.Ping, {}),
        ('{"type":"auth","token":"t.t.t","id":1}', protocol.Auth, {"token": "t.t.t", "id": 1}),
        ('{"type":"refresh","token":"t.t.t"}', protocol.Refresh, {"token": "t.t.t"}),
        ('{"type":"join","channel":"a","token":"t"}', protocol.Join, {"token": "t"}),
    ],
)
def test_each_client_frame_decodes(text: str, cls: type, fields: dict[str, Any]) -> None:
    frame = decode_client_frame(text)
    assert isinstance(frame, cls)
    for name, value in fields.items():
        assert getattr(frame, name) == value


def test_join_keeps_since_and_raw_meta() -> None:
    frame = decode_client_frame(
        '{"type":"join","channel":"a","since":{"offset":3,"epoch":"e1"},"meta":{"n": [1,2]}}'
    )
    assert isinstance(frame, protocol.Join)
    assert frame.since == protocol.Since(offset=3, epoch="e1")
    assert isinstance(frame.meta, Raw)
    assert json.loads(bytes(frame.meta)) == {"n": [1, 2]}


def test_publish_data_is_kept_raw_and_big_numbers_survive() -> None:
    frame = decode_client_frame('{"type":"publish","channel":"a","data":123456789012345678901234}')
    assert isinstance(frame, protocol.Publish)
    assert bytes(frame.data) == b"123456789012345678901234"  # type: ignore[arg-type]


def test_publish_takes_an_idempotency_key_of_1_to_64_characters() -> None:
    base = '{"type":"publish","channel":"a","data":1,"id":4'
    assert isinstance(frame := decode_client_frame(base + "}"), protocol.Publish)
    assert frame.idempotency_key is UNSET
    for key in ("k", "é" * 64, "with spaces {and} braces"):
        frame = decode_client_frame(base + f',"idempotency_key":{json.dumps(key)}}}')
        assert isinstance(frame, protocol.Publish) and frame.idempotency_key == key
        assert protocol.is_idempotency_key(key)
    for bad in ('""', json.dumps("k" * 65), "7", "null", '["k"]'):
        error = decode_error(base + f',"idempotency_key":{bad}}}')
        assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 4)
        assert '"idempotency_key"' in error.message
    assert not protocol.is_idempotency_key("") and not protocol.is_idempotency_key("k" * 65)


@pytest.mark.parametrize(
    ("text", "code", "frame_id"),
    [
        ("not json", ErrorCode.BAD_JSON, None),
        ("", ErrorCode.BAD_JSON, None),
        ("[1,2]", ErrorCode.BAD_JSON, None),
        ('"a string"', ErrorCode.BAD_JSON, None),
        ("null", ErrorCode.BAD_JSON, None),
        ('{"type":"join","channel":"a"', ErrorCode.BAD_JSON, None),
        ('{"type":"teleport","id":4}', ErrorCode.UNKNOWN_TYPE, 4),
        ('{"id":5}', ErrorCode.BAD_REQUEST, 5),
        ('{"type":7,"id":5}', ErrorCode.BAD_REQUEST, 5),
        ('{"type":"join","id":6}', ErrorCode.BAD_REQUEST, 6),
        ('{"type":"join","channel":7,"id":"s"}', ErrorCode.BAD_REQUEST, "s"),
        ('{"type":"join","channel":"a b","id":1}', ErrorCode.BAD_REQUEST, 1),
        ('{"type":"join","channel":""}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"join","channel":"' + "x" * 129 + '"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"join","channel":"a\\n"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"join","channel":"a\\u0000b"}', ErrorCode.BAD_REQUEST, None),
        (
            '{"type":"join","channel":"a","since":{"offset":"1","epoch":"e"}}',
            ErrorCode.BAD_REQUEST,
            None,
        ),
        (
            '{"type":"join","channel":"a","since":{"offset":-1,"epoch":"e"}}',
            ErrorCode.BAD_REQUEST,
            None,
        ),
        ('{"type":"publish","channel":"a","id":2}', ErrorCode.BAD_REQUEST, 2),
        ('{"type":"send","to":"bob","id":3}', ErrorCode.BAD_REQUEST, 3),
        ('{"type":"send","to":"no spaces","data":1}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"history","channel":"a","limit":-1}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"history","channel":"a","limit":"10"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"ping","id":true}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"ping","id":1.5}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"ping","id":null}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"ping","id":[1]}', ErrorCode.BAD_REQUEST, None),
        ("[" * 5000 + "]" * 5000, ErrorCode.BAD_JSON, None),
        (
            '{"type":"publish","channel":"a","data":' + "[" * 5000 + "]" * 5000 + "}",
            ErrorCode.BAD_JSON,
            None,
        ),
    ],
)
def test_bad_frames_get_their_code(text: str, code: ErrorCode, frame_id: object) -> None:
    err = decode_error(text)
    assert err.code == code
    assert err.frame_id == frame_id
    assert err.message


def test_error_messages_name_the_field() -> None:
    assert '"channel"' in decode_error('{"type":"join","channel":7}').message
    assert "got int" in decode_error('{"type":"join","channel":7}').message
    assert '"id"' in decode_error('{"type":"ping","id":true}').message
    assert '"data"' in decode_error('{"type":"publish","channel":"a"}').message


def test_channel_names_and_namespaces() -> None:
    assert protocol.is_channel_name("chat:lobby")
    assert protocol.is_channel_name("A-z_0.9:@x")
    assert protocol.is_channel_name("x" * 128)
    assert not protocol.is_channel_name("x" * 129)
    assert not protocol.is_channel_name("")
    assert not protocol.is_channel_name("a/b")
    assert not protocol.is_channel_name("$chat")
    assert protocol.namespace("chat:lobby") == "chat"
    assert protocol.namespace("lobby") == "lobby"
    assert protocol.namespace("a:b:c") == "a"


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            protocol.Welcome("u", "s", protocol.ServerInfo("wshub", "1", "n1"), 20.0),
            {
                "type": "welcome",
                "user": "u",
                "session": "s",
                "server": {"name": "wshub", "version": "1", "node": "n1"},
                "heartbeat": 20.0,
                "expires": None,
            },
        ),
        (
            protocol.Welcome("u", "s", protocol.ServerInfo("w", "1"), 5.0, 1700000000, id="a"),
            {
                "type": "welcome",
                "user": "u",
                "session": "s",
                "server": {"name": "w", "version": "1"},
                "heartbeat": 5.0,
                "expires": 1700000000,
                "id": "a",
            },
        ),
        (protocol.Ack(id=3, expires=None), {"type": "ack", "id": 3, "expires": None}),
        (protocol.Ack(id=3, expires=17), {"type": "ack", "id": 3, "expires": 17}),
        (
            protocol.Subscribed("a", 4, "e"),
            {"type": "subscribed", "channel": "a", "offset": 4, "epoch": "e"},
        ),
        (
            protocol.Unsubscribed("a", "expired"),
            {"type": "unsubscribed", "channel": "a", "reason": "expired"},
        ),
        (
            protocol.Joined("a", 3, "e", True, id=1),
            {
                "type": "joined",
                "channel": "a",
                "offset": 3,
                "epoch": "e",
                "recovered": True,
                "id": 1,
            },
        ),
        (protocol.Left("a", id="x"), {"type": "left", "channel": "a", "id": "x"}),
        (
            protocol.Ack(id=2, channel="a", offset=9, epoch="e"),
            {"type": "ack", "id": 2, "channel": "a", "offset": 9, "epoch": "e"},
        ),
        (protocol.Ack(id=2), {"type": "ack", "id": 2}),
        (
            protocol.Message("a", 1, "e", None, Raw(b'{"k":1}'), 5),
            {
                "type": "message",
                "channel": "a",
                "offset": 1,
                "epoch": "e",
                "from": None,
                "data": {"k": 1},
                "ts": 5,
            },
        ),
        (
            protocol.Direct("bob", Raw(b"1"), 5),
            {"type": "direct", "from": "bob", "data": 1, "ts": 5},
        ),
        (
            protocol.MemberJoined("a", "u", Raw(b"null")),
            {"type": "member_joined", "channel": "a", "user": "u", "meta": None},
        ),
        (
            protocol.MemberLeft("a", "u", Raw(b"[1]")),
            {"type": "member_left", "channel": "a", "user": "u", "meta": [1]},
        ),
        (
            protocol.Presence("a", [protocol.Member("u", Raw(b"{}"), 2)], id=3),
            {
                "type": "presence",
                "channel": "a",
                "members": [{"user": "u", "meta": {}, "connections": 2}],
                "id": 3,
            },
        ),
        (
            protocol.History("a", "e", [Raw(b'{"type":"message"}')], id=4),
            {
                "type": "history",
                "channel": "a",
                "epoch": "e",
                "messages": [{"type": "message"}],
                "id": 4,
            },
        ),
        (protocol.Pong(), {"type": "pong"}),
        (protocol.Error("bad_json", "m"), {"type": "error", "code": "bad_json", "message": "m"}),
    ],
)
def test_each_server_frame_encodes(frame: protocol.ServerFrame, expected: dict[str, Any]) -> None:
    assert json.loads(protocol.encode(frame)) == expected


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('{"type":"auth","id":1}', '"auth" requires the field "token"'),
        ('{"type":"auth","id":1,"token":""}', '"auth" requires the field "token"'),
        ('{"type":"auth","id":1,"token":42}', "invalid 'auth' frame: \"token\": expected str"),
        ('{"type":"refresh","id":1,"token":["a"]}', '"token": expected str'),
        ('{"type":"join","id":1,"channel":"a","token":{}}', '"token": expected str'),
    ],
)
def test_a_token_of_the_wrong_type_is_bad_request_naming_it(text: str, detail: str) -> None:
    err = decode_error(text)
    assert err.code == ErrorCode.BAD_REQUEST
    assert err.frame_id == 1
    assert detail in err.message


def test_close_code_4003_means_no_identity() -> None:
    assert protocol.CloseCode.NO_IDENTITY == 4003


def test_every_error_code_encodes_with_and_without_id() -> None:
    for code in ErrorCode:
        with_id = json.loads(protocol.error(code, "why", 9))
        assert with_id == {"type": "error", "code": code.value, "message": "why", "id": 9}
        assert "id" not in json.loads(protocol.error(code, "why"))


def test_every_type_is_covered() -> None:
    assert {
        "join",
        "leave",
        "publish",
        "send",
        "presence",
        "history",
        "ping",
        "auth",
        "refresh",
    } == protocol.CLIENT_TYPES
    assert set(protocol.REQUIRED_FIELDS) == protocol.CLIENT_TYPES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), json_values.map(lambda v: json.dumps(v))))
def test_decoder_never_raises_anything_but_frame_error(text: str | bytes) -> None:
    try:
        decode_client_frame(text)
    except FrameError as err:
        assert err.code in {ErrorCode.BAD_JSON, ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE}


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(protocol.CLIENT_TYPES))},
        optional={
            "id": json_values,
            "channel": st.one_of(st.text(max_size=140), json_values),
            "to": st.one_of(st.text(max_size=10), json_values),
            "data": json_values,
            "limit": json_values,
            "since": json_values,
            "token": st.one_of(st.text(max_size=10), json_values),
        },
    )
)
def test_known_types_decode_or_get_bad_request(obj: dict[str, Any]) -> None:
    try:
        frame = decode_client_frame(msgspec.json.encode(obj))
    except FrameError as err:
        assert err.code == ErrorCode.BAD_REQUEST
    else:
        assert frame.__struct_config__.tag == obj["type"]


# --- hostile input: invalid UTF-8, deep nesting, huge numbers, control characters -----------

CHANNEL_TYPES = sorted(t for t, fields in protocol.REQUIRED_FIELDS.items() if "channel" in fields)
invalid_utf8 = st.sampled_from(
    [b"\xff", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80"]
)


@settings(max_examples=200, deadline=None)
@given(
    bad=invalid_utf8,
    before=st.text(max_size=8).map(str.encode),
    after=st.text(max_size=8).map(str.encode),
    where=st.sampled_from(["channel", "data", "id", "meta", "key"]),
)
def test_invalid_utf8_anywhere_is_bad_json(
    bad: bytes, before: bytes, after: bytes, where: str
) -> None:
    inner = (
        json.dumps(before.decode())[:-1].encode() + bad + json.dumps(after.decode())[1:].encode()
    )
    frames = {
        "channel": b'{"type":"join","channel":' + inner + b"}",
        "data": b'{"type":"publish","channel":"a","data":' + inner + b"}",
        "id": b'{"type":"ping","id":' + inner + b"}",
        "meta": b'{"type":"join","channel":"a","meta":{"k":' + inner + b"}}",
        "key": b'{"type":"ping",' + inner + b":1}",
    }
    err = decode_error(frames[where])
    assert (err.code, err.frame_id) == (ErrorCode.BAD_JSON, None)


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3))
def test_lone_surrogates_in_a_str_are_bad_json(surrogates: str) -> None:
    assert (
        decode_error('{"type":"join","channel":"a' + surrogates + '"}').code == ErrorCode.BAD_JSON
    )


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(1, 3000),
    where=st.sampled_from(["frame", "data", "meta", "id", "channel", "since"]),
)
def test_deep_nesting_is_decoded_or_bad_json_never_a_crash(depth: int, where: str) -> None:
    nest = "[" * depth + "]" * depth
    text = {
        "frame": nest,
        "data": '{"type":"publish","channel":"a","data":' + nest + "}",
        "meta": '{"type":"join","channel":"a","meta":' + nest + "}",
        "id": '{"type":"ping","id":' + nest + "}",
        "channel": '{"type":"join","channel":' + nest + "}",
        "since": '{"type":"join","channel":"a","since":' + nest + "}",
    }[where]
    try:
        frame = decode_client_frame(text)
    except FrameError as err:
        assert err.code in {ErrorCode.BAD_JSON, ErrorCode.BAD_REQUEST}
        assert where != "data" or depth > 500  # reasonable nesting in data is fine
    else:
        assert where in {"data", "meta"}
        raw = getattr(frame, where)
        assert bytes(raw) == nest.encode()


huge_numbers = st.one_of(
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    st.integers(1, 4000).map(lambda n: "9" * n),
    st.sampled_from(["1e400", "-1e400", "1e-400", "123456789e999999", "0.1e-999999"]),
).map(str)


@settings(max_examples=200, deadline=None)
@given(number=huge_numbers, where=st.sampled_from(["data", "limit", "offset", "id", "meta"]))
def test_huge_numbers_are_kept_raw_or_refused(number: str, where: str) -> None:
    text = {
        "data": '{"type":"publish","channel":"a","data":' + number + "}",
        "meta": '{"type":"join","channel":"a","meta":[' + number + "]}",
        "limit": '{"type":"history","channel":"a","limit":' + number + "}",
        "offset": '{"type":"join","channel":"a","since":{"offset":' + number + ',"epoch":"e"}}',
        "id": '{"type":"ping","id":' + number + "}",
    }[where]
    try:
        frame = decode_client_frame(text)
    except FrameError as err:
        assert where in {"limit", "offset", "id"}
        assert err.code == ErrorCode.BAD_REQUEST
    else:
        if where == "data":  # a publication passes through byte for byte, whatever its size
            assert bytes(frame.data) == number.encode()  # type: ignore[union-attr,arg-type]


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(CHANNEL_TYPES),
    before=st.text("abcXYZ09_-.:@", max_size=60),
    control=st.characters(categories=["Cc"]) | st.sampled_from(["\u2028", "\u200b", "\ufeff"]),
    after=st.text("abcXYZ09_-.:@", max_size=60),
    frame_id=st.integers(0, 2**31) | st.text(max_size=5),
)
def test_control_characters_in_channel_names_are_bad_request(
    kind: str, before: str, control: str, after: str, frame_id: int | str
) -> None:
    obj: dict[str, Any] = {"type": kind, "channel": before + control + after, "id": frame_id}
    if kind == "publish":
        obj["data"] = 1
    err = decode_error(json.dumps(obj))
    assert (err.code, err.frame_id) == (ErrorCode.BAD_REQUEST, frame_id)
    assert "channel" in err.message
