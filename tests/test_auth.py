"""JWT auth and origins against real ``wshub serve`` processes (docs/protocol.md "Auth")."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner
from websockets.typing import Origin

from tests.conftest import ServerFactory
from tests.support import Client, ServerProcess, connect
from wshub.cli.main import app
from wshub.core.auth import Identity, TokenRejected, TokenVerifier
from wshub.core.permissions import Permissions

SECRET = "a-test-secret-long-enough-for-hs256-and-for-hs512-which-wants-64-bytes"
ORIGIN = "https://chat.example.com"


# An hour: the parametrized tokens are made at collection and must outlive the whole run.
def claims(user: str | None = "alice", ttl: float = 3600, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"exp": int(time.time() + ttl), **extra}
    if user is not None:
        out["sub"] = user
    return out


def hs256(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged_hs256_with(key: bytes, payload: dict[str, Any]) -> str:
    """The HS/RS confusion attack: HS256 signed with the server's *public* key as the secret."""
    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing_input = f"{b64(header)}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unsigned(payload: dict[str, Any]) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}."


async def handshake_status(url: str, origin: str | None = None, **kwargs: Any) -> tuple[int, str]:
    """The HTTP status of a refused handshake (101 when it upgrades), and the reason given."""
    if origin is not None:
        kwargs["origin"] = Origin(origin)
    try:
        async with websockets.connect(url, open_timeout=10, **kwargs) as ws:
            await ws.recv()
            return 101, ""
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode()


@pytest.fixture(scope="module")
def hs_server() -> Iterator[ServerProcess]:
    proc = ServerProcess(
        "--allowed-origins", f"{ORIGIN}, http://localhost:3000", env={"WSHUB_JWT_SECRET": SECRET}
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rs_server(
    rsa_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("keys") / "rs.pem"
    path.write_bytes(public_pem(rsa_key))
    proc = ServerProcess("--jwt-public-key", str(path)).start()
    yield proc
    proc.stop()


# --- refused tokens: 401 before the upgrade ---------------------------------------------------


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (hs256(claims(), "another-secret-that-is-also-long-enough-for-hs256!"), "signature"),
        (hs256(claims(), alg="HS512"), "algorithm"),
        (unsigned(claims()), "algorithm"),
        (hs256(claims(ttl=-10)), "expired"),
        (hs256(claims(user=None)), '"sub"'),
        ("not-a-token", "malformed"),
        ("a.b.c", "malformed"),
        (hs256(claims()).rsplit(".", 1)[0] + "." + b64(b"x" * 32), "signature"),
        (hs256(claims(user="has spaces")), '"sub"'),
        (hs256({**claims(), "sub": 42}), "Subject must be a string"),
        (hs256(claims(join="chat:*")), '"join"'),
        (hs256(claims(publish=[1])), '"publish"'),
        (hs256(claims(ttl=7200, nbf=int(time.time()) + 3600)), "not yet valid"),
        (hs256(claims(aud="another-service")), "audience"),
    ],
    ids=[
        "bad-signature",
        "wrong-algorithm",
        "alg-none",
        "expired",
        "no-sub",
        "malformed",
        "malformed-parts",
        "replaced-signature",
        "invalid-sub",
        "sub-not-a-string",
        "join-not-a-list",
        "publish-not-strings",
        "not-yet-valid",
        "for-another-audience",
    ],
)
async def test_each_refused_token_kind_gets_401(
    hs_server: ServerProcess, token: str | None, reason: str
) -> None:
    url = f"{hs_server.url}/ws" + (f"?token={token}" if token is not None else "")
    status, body = await handshake_status(url)
    assert status == 401
    assert reason in body


async def test_a_token_in_the_bearer_header_works_and_user_is_ignored(
    hs_server: ServerProcess,
) -> None:
    header = {"Authorization": f"Bearer {hs256(claims('alice'))}"}
    async with connect(hs_server.url, "mallory", additional_headers=header) as c:
        assert c.welcome["user"] == "alice"
    async with connect(hs_server.url, "mallory", token=hs256(claims("bob"))) as c:
        assert c.welcome["user"] == "bob"
    # Another scheme is no token: the upgrade waits for an auth frame, and ?user= is no one.
    basic = {"Authorization": "Basic YTpi"}
    async with websockets.connect(f"{hs_server.url}/ws?user=alice", additional_headers=basic) as ws:
        await ws.send(json.dumps({"type": "join", "channel": "user:alice", "id": 1}))
        assert json.loads(await ws.recv())["code"] == "unauthorized"


# --- the permission matrix --------------------------------------------------------------------


async def close_code(client: Client) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        while True:
            await client.recv(timeout=10)
    except websockets.ConnectionClosed as exc:
        return None if exc.rcvd is None else exc.rcvd.code


async def reply_type(client: Client, frame: dict[str, Any]) -> str:
    reply = await client.request(frame)
    return str(reply["code"]) if reply["type"] == "error" else str(reply["type"])


async def test_permission_matrix(hs_server: ServerProcess) -> None:
    token = hs256(claims("alice", join=["chat:*", "news:public"], publish=["chat:*"]))
    bare = hs256(claims("bob"))
    async with (
        connect(hs_server.url, token=token) as alice,
        connect(hs_server.url, token=bare) as bob,
    ):
        matrix = [
            (alice, "join", "chat:lobby", "joined"),
            (alice, "join", "chat:team:7", "joined"),
            (alice, "join", "news:public", "joined"),
            (alice, "join", "news:private", "forbidden"),
            (alice, "join", "chatter", "forbidden"),
            (alice, "join", "user:alice", "joined"),  # the user's own channel, always
            (alice, "join", "user:bob", "forbidden"),
            (alice, "publish", "chat:lobby", "ack"),
            (alice, "publish", "news:public", "forbidden"),  # may join, not publish
            (alice, "publish", "user:alice", "forbidden"),  # own channel: join only
            (alice, "presence", "news:private", "forbidden"),  # reading needs join
            (alice, "history", "news:public", "history"),
            (bob, "join", "user:bob", "joined"),  # no claims: only the own channel
            (bob, "join", "chat:lobby", "forbidden"),
            (bob, "publish", "chat:lobby", "forbidden"),
            (bob, "presence", "user:bob", "presence"),
        ]
        for client, action, channel, expected in matrix:
            frame: dict[str, Any] = {"type": action, "channel": channel}
            if action == "publish":
                frame["data"] = {"n": 1}
            got = await reply_type(client, frame)
            assert got == expected, (client.welcome["user"], action, channel, got)
        # A backend notifies alice through her own channel; she is still fully usable.
        assert await reply_type(alice, {"type": "ping"}) == "pong"


def test_patterns_unit() -> None:
    p = Permissions("carol", join=["*"], publish=["a.*.b", "x?"])
    assert p.allows("join", "anything:at:all")
    assert p.allows("publish", "a.1.b")
    assert not p.allows("publish", "a.1.c")
    assert not p.allows("publish", "xy")  # ``?`` is literal: only ``*`` is a wildcard
    assert not p.allows("leave", "anything")
    assert Permissions("dave").allows("join", "user:dave")
    assert not Permissions("dave").allows("publish", "user:dave")


# --- expiry while connected ------------------------------------------------------------------


async def test_token_expiry_closes_with_4001_at_expiry(hs_server: ServerProcess) -> None:
    exp = int(time.time()) + 2
    token = hs256({"sub": "erin", "exp": exp, "join": ["chat:*"]})
    async with (
        connect(hs_server.url, token=token) as erin,
        connect(hs_server.url, token=hs256(claims("frank", join=["chat:*"]))) as frank,
    ):
        await erin.join("chat:x")
        await frank.join("chat:x")
        code = await close_code(erin)
        closed_at = time.time()
        assert code == 4001
        assert exp - 0.05 <= closed_at < exp + 1.5
        # erin left the channel with her connection; frank is unaffected
        left = await frank.expect("member_left")
        assert left["user"] == "erin"
        assert await reply_type(frank, {"type": "ping"}) == "pong"


# --- origins ---------------------------------------------------------------------------------


async def test_wrong_origin_gets_403_allowed_and_absent_origins_pass(
    hs_server: ServerProcess,
) -> None:
    url = f"{hs_server.url}/ws?token={hs256(claims())}"
    assert (await handshake_status(url, origin="https://evil.example"))[0] == 403
    assert (await handshake_status(url, origin="https://chat.example.com.evil"))[0] == 403
    assert (await handshake_status(url, origin="https://Chat.Example.com"))[0] == 101
    assert (await handshake_status(url, origin="http://localhost:3000"))[0] == 101
    assert (await handshake_status(url))[0] == 101  # no Origin: not a browser
    # The origin is checked first: a foreign page learns nothing about tokens.
    status, _ = await handshake_status(f"{hs_server.url}/ws", origin="https://evil.example")
    assert status == 403


# --- the plain-text chat under auth ----------------------------------------------------------


async def test_plain_text_chat_needs_the_token_of_its_client_id(hs_server: ServerProcess) -> None:
    token = hs256(claims("gina"))
    assert (await handshake_status(f"{hs_server.url}/ws/gina"))[0] == 401
    assert (await handshake_status(f"{hs_server.url}/ws/hank?token={token}"))[0] == 403
    async with websockets.connect(f"{hs_server.url}/ws/gina?token={token}") as ws:
        await ws.send("hi")
        assert await ws.recv() == "You wrote: hi"


# --- public keys: RS256 (and the confusion attack) and ES256 ---------------------------------


async def test_rs256_accepts_its_tokens_and_refuses_confusion(
    rs_server: ServerProcess, rsa_key: rsa.RSAPrivateKey
) -> None:
    good = jwt.encode(claims("ivy"), rsa_key, algorithm="RS256")
    async with connect(rs_server.url, token=good) as c:
        assert c.welcome["user"] == "ivy"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = [
        forged_hs256_with(public_pem(rsa_key), claims("ivy")),
        jwt.encode(claims("ivy"), other, algorithm="RS256"),
        jwt.encode(claims("ivy"), rsa_key, algorithm="PS256"),
        hs256(claims("ivy")),
        unsigned(claims("ivy")),
    ]
    for token in refused:
        assert (await handshake_status(f"{rs_server.url}/ws?token={token}"))[0] == 401


def test_es256_verifier_and_key_checks(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier.from_public_key(public_pem(key))
    assert verifier.algorithm == "ES256"
    identity = verifier.verify(jwt.encode(claims("jo", publish=["a"]), key, algorithm="ES256"))
    assert isinstance(identity, Identity)
    assert identity.user == "jo"
    assert identity.permissions is not None
    assert identity.permissions.allows("publish", "a")
    with pytest.raises(TokenRejected, match="algorithm"):
        verifier.verify(forged_hs256_with(public_pem(key), claims("jo")))
    with pytest.raises(ValueError, match="P-256"):
        TokenVerifier.from_public_key(public_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match="2048"):
        TokenVerifier.from_public_key(public_pem(rsa.generate_private_key(65537, 1024)))
    with pytest.raises(ValueError, match="PEM"):
        TokenVerifier.from_public_key(b"not a key")
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier.from_secret("short")
    with pytest.raises(ValueError, match="not usable"):
        TokenVerifier.from_secret(public_pem(key).decode())
    with pytest.raises(ValueError, match="cannot read"):
        TokenVerifier.from_public_key_file(tmp_path / "missing.pem")


# --- the CLI: wshub token, and the open-mode warning ------------------------------------------


async def test_wshub_token_mints_what_the_server_accepts(hs_server: ServerProcess) -> None:
    result = CliRunner().invoke(
        app,
        ["token", "--user", "kim", "--join", "chat:*", "--publish", "chat:*", "--ttl", "60"],
        env={"WSHUB_JWT_SECRET": SECRET},
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert decoded["join"] == decoded["publish"] == ["chat:*"]
    assert 59 <= decoded["exp"] - time.time() <= 61
    async with connect(hs_server.url, token=token) as kim:
        assert kim.welcome["user"] == "kim"
        await kim.join("chat:x")
        await kim.publish("chat:x", "hello")
    missing = CliRunner().invoke(app, ["token", "--user", "kim"], env={"WSHUB_JWT_SECRET": ""})
    assert missing.exit_code != 0
    assert "WSHUB_JWT_SECRET" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jwt-secret", "short"], "at least 32 bytes"),
        (["--jwt-secret", SECRET, "--jwt-public-key", "x.pem"], "not both"),
        (["--jwt-public-key", "/nonexistent.pem"], "cannot read"),
    ],
)
def test_bad_auth_settings_fail_at_start(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "0", *args], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())


async def test_open_mode_warns_on_a_non_loopback_address(make_server: ServerFactory) -> None:
    public = make_server("--host", "0.0.0.0")
    local = make_server("--host", "127.0.0.1")
    await asyncio.sleep(0.2)  # let the log reach the file
    assert "OPEN MODE on 0.0.0.0" in public.log()
    assert "OPEN MODE" not in local.log()
    secured = make_server("--host", "0.0.0.0", WSHUB_JWT_SECRET=SECRET)
    assert "OPEN MODE" not in secured.log()
