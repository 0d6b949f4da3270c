"""Identity inside the connection, without sockets: the ``auth`` gate, ``refresh`` checks, and
the credentials that grant channels beyond the join patterns (with their expiry timers)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from wshub import protocol
from wshub.core.auth import Identity, TokenVerifier
from wshub.core.credentials import Credentials
from wshub.core.identity import FirstFrame, expires_field, refreshed
from wshub.core.tokens import Claims, Signer
from wshub.protocol import ErrorCode, FrameError

SECRET = "a-test-secret-long-enough-for-hs256-and-for-hs512-which-wants-64-bytes"
SIGNER = Signer.from_secret(SECRET)
VERIFIER = TokenVerifier.from_secret(SECRET)


def frames(texts: list[str]) -> list[dict[str, Any]]:
    return [json.loads(t) for t in texts]


def test_the_gate_answers_ping_and_refuses_everything_else_until_auth() -> None:
    gate = FirstFrame(VERIFIER, 1000)
    assert frames(gate.receive('{"type":"ping","id":1}').replies) == [{"type": "pong", "id": 1}]
    for text in (
        '{"type":"join","channel":"a","id":2}',
        '{"type":"publish","channel":"a","data":1,"id":2}',
        '{"type":"refresh","token":"x","id":2}',  # a refresh before auth
    ):
        step = gate.receive(text)
        (reply,) = frames(step.replies)
        assert (reply["code"], reply["id"]) == ("unauthorized", 2)
        assert step.identity is None and step.close is None
    good = SIGNER.sign(Claims("ann", ["a:*"], channels=["news"], ttl=60))
    step = gate.receive(json.dumps({"type": "auth", "id": "x", "token": good}))
    assert step.replies == [] and step.close is None
    assert step.identity is not None and step.identity.user == "ann"
    assert step.identity.channels == ("news",)
    assert step.frame_id == "x"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (None, "bad_frame"),
        ("not json", "bad_json"),
        ('{"type":"auth","id":1,"token":7}', "bad_request"),  # a token of the wrong type
        ('{"type":"auth","id":1}', "bad_request"),
        ('{"type":"nope","id":1}', "unknown_type"),
        (json.dumps({"type": "auth", "id": 1, "token": "x" * 2000}), "too_large"),
    ],
)
def test_bad_input_before_auth_gets_its_error_and_the_wait_goes_on(
    text: str | None, code: str
) -> None:
    step = FirstFrame(VERIFIER, 1000).receive(text)
    (reply,) = frames(step.replies)
    assert reply["code"] == code
    assert step.close is None and step.identity is None


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("x" * 900, "malformed"),
        (Signer.from_secret("b" * 40).sign(Claims("ann")), "signature"),
        (SIGNER.sign(Claims("ann", ttl=1), now=time.time() - 60), "expired"),
        (SIGNER.sign(Claims("ann", channel="room")), "subscription token"),
    ],
)
def test_an_auth_token_that_does_not_verify_is_unauthorized_then_4003(token: str, why: str) -> None:
    step = FirstFrame(VERIFIER, 1000).receive(json.dumps({"type": "auth", "id": 5, "token": token}))
    (reply,) = frames(step.replies)
    assert (reply["code"], reply["id"]) == ("unauthorized", 5)
    assert why in reply["message"]
    assert step.close is not None and step.close[0] == 4003
    assert FirstFrame.timed_out().close == (4003, "no auth frame in time")


def test_refresh_needs_the_same_user_and_a_token_that_verifies() -> None:
    fresh = SIGNER.sign(Claims("ann", ["b:*"], ttl=120))
    identity = refreshed(VERIFIER, "ann", protocol.Refresh(token=fresh, id=1))
    assert identity.permissions is not None and identity.permissions.allows("join", "b:1")
    cases = [
        (VERIFIER, SIGNER.sign(Claims("bob")), ErrorCode.FORBIDDEN, "'bob'"),
        (VERIFIER, "garbage", ErrorCode.UNAUTHORIZED, "malformed"),
        (None, fresh, ErrorCode.BAD_REQUEST, "no auth configured"),
    ]
    for verifier, token, code, why in cases:
        with pytest.raises(FrameError) as info:
            refreshed(verifier, "ann", protocol.Refresh(token=token, id=9))
        assert (info.value.code, info.value.frame_id) == (code, 9)
        assert why in info.value.message
    assert expires_field(None) is None
    assert expires_field(1700000000.9) == 1700000000


async def test_a_subscription_grant_ends_at_its_exp_unless_a_fresh_one_replaced_it() -> None:
    expired: list[str] = []
    ended = asyncio.Event()

    def on_expiry(channel: str) -> None:
        expired.append(channel)
        ended.set()

    creds = Credentials(VERIFIER, Identity("ann", channels=("news",)), on_expiry)
    assert creds.allows("news") and not creds.allows("room:1")
    creds.grant("room:1", time.time() + 0.2)
    creds.grant("room:2", time.time() + 0.2)
    creds.grant("room:2", time.time() + 60)  # joined again with a fresh token: replaces
    creds.grant("room:3", None)  # no exp: until left
    assert all(creds.allows(f"room:{i}") for i in (1, 2, 3))
    await asyncio.wait_for(ended.wait(), 5)
    assert expired == ["room:1"]
    assert not creds.allows("room:1") and creds.allows("room:2")
    creds.left("room:3")
    assert not creds.allows("room:3")
    creds.placed.add("ops")
    creds.replace(Identity("ann", expires=5.0, channels=("sports",)))
    assert (creds.allows("ops"), creds.allows("news"), creds.allows("sports")) == (
        True,
        False,
        True,
    )
    assert creds.expires == 5.0
    creds.close()
    assert not creds.allows("room:2")
