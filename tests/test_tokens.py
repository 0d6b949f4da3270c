"""Connection and subscription tokens: signing (``wshub token``) and the claims the server reads."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from wshub.cli.main import app
from wshub.core.auth import TokenRejected, TokenVerifier
from wshub.core.tokens import Claims, Signer

SECRET = "a-test-secret-long-enough-for-hs256-and-for-hs512-which-wants-64-bytes"

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def private_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pairs(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> list[tuple[Signer, TokenVerifier]]:
    return [
        (Signer.from_secret(SECRET), TokenVerifier.from_secret(SECRET)),
        (
            Signer.from_private_key(private_pem(rsa_key)),
            TokenVerifier.from_public_key(public_pem(rsa_key)),
        ),
        (
            Signer.from_private_key(private_pem(ec_key)),
            TokenVerifier.from_public_key(public_pem(ec_key)),
        ),
    ]


def test_each_algorithm_signs_what_its_verifier_accepts(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    algorithms = []
    for signer, verifier in pairs(rsa_key, ec_key):
        algorithms.append(signer.algorithm)
        signed_at = time.time()
        token = signer.sign(Claims("ann", ["chat:*"], ["chat:a"], ["news", "chat:a"], ttl=60))
        assert jwt.get_unverified_header(token)["alg"] == verifier.algorithm == signer.algorithm
        identity = verifier.verify(token)
        assert identity.user == "ann"
        assert identity.channels == ("news", "chat:a")
        # exp is whole seconds: the second it was signed in, plus the lifetime.
        assert identity.expires is not None
        assert int(signed_at) + 60 <= identity.expires <= int(time.time()) + 60
        assert identity.permissions is not None
        assert identity.permissions.allows("join", "chat:b")
        assert not identity.permissions.allows("publish", "chat:b")
        sub = signer.sign(Claims("ann", channel="room:1", ttl=0))
        assert verifier.verify_subscription(sub, "ann", "room:1") is None
    assert algorithms == ["HS256", "RS256", "ES256"]


def test_a_subscription_token_allows_one_user_one_channel() -> None:
    signer, verifier = Signer.from_secret(SECRET), TokenVerifier.from_secret(SECRET)
    sub = signer.sign(Claims("ann", channel="room:1", ttl=30))
    expires = verifier.verify_subscription(sub, "ann", "room:1")
    assert expires is not None and 29 <= expires - time.time() <= 31
    with pytest.raises(TokenRejected, match="another user"):
        verifier.verify_subscription(sub, "bob", "room:1")
    with pytest.raises(TokenRejected, match="another channel"):
        verifier.verify_subscription(sub, "ann", "room:2")
    with pytest.raises(TokenRejected, match="cannot identify"):
        verifier.verify(sub)  # a grant for one channel does not open a connection
    connection = signer.sign(Claims("ann", ["room:*"]))
    with pytest.raises(TokenRejected, match='no "channel" claim'):
        verifier.verify_subscription(connection, "ann", "room:1")
    expired = signer.sign(Claims("ann", channel="room:1", ttl=1), now=time.time() - 10)
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify_subscription(expired, "ann", "room:1")
    other = Signer.from_secret("x" * 40).sign(Claims("ann", channel="room:1"))
    with pytest.raises(TokenRejected, match="signature"):
        verifier.verify_subscription(other, "ann", "room:1")
    with pytest.raises(TokenRejected, match="malformed"):
        verifier.verify_subscription("x" * 70_000, "ann", "room:1")


@pytest.mark.parametrize(
    "channels", [["bad channel"], "news", [1], [["news"]]], ids=["name", "string", "int", "nested"]
)
def test_a_malformed_channels_claim_identifies_nobody(channels: object) -> None:
    token = jwt.encode({"sub": "ann", "channels": channels}, SECRET, algorithm="HS256")
    with pytest.raises(TokenRejected, match='"channels"'):
        TokenVerifier.from_secret(SECRET).verify(token)


def test_claims_refuse_what_the_server_would_refuse() -> None:
    with pytest.raises(ValueError, match="user id"):
        Claims("has space").payload()
    with pytest.raises(ValueError, match="channel name"):
        Claims("ann", channels=["a b"]).payload()
    with pytest.raises(ValueError, match="channel name"):
        Claims("ann", channel="$chat").payload()
    with pytest.raises(ValueError, match="32 bytes"):
        Signer.from_secret("short")
    with pytest.raises(ValueError, match="P-256"):
        Signer.from_private_key(private_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match="PEM private key"):
        Signer.from_private_key(b"nope")


def test_wshub_token_signs_rs256_es256_and_subscription_tokens(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    runner = CliRunner()
    for key, alg in ((rsa_key, "RS256"), (ec_key, "ES256")):
        path = tmp_path / f"{alg}.pem"
        path.write_bytes(private_pem(key))
        args = ["token", "--user", "kim", "--private-key", str(path), "--channels", "news"]
        result = runner.invoke(app, [*args, "--join", "chat:*", "--ttl", "60"], env={})
        assert result.exit_code == 0, result.output
        token = result.output.strip()
        assert jwt.get_unverified_header(token)["alg"] == alg
        identity = TokenVerifier.from_public_key(public_pem(key)).verify(token)
        assert (identity.user, identity.channels) == ("kim", ("news",))
    sub = runner.invoke(
        app,
        ["token", "--user", "kim", "--channel", "room:9", "--ttl", "0"],
        env={"WSHUB_JWT_SECRET": SECRET},
    )
    assert sub.exit_code == 0, sub.output
    decoded = jwt.decode(sub.output.strip(), SECRET, algorithms=["HS256"])
    assert decoded["channel"] == "room:9" and "exp" not in decoded
    missing = runner.invoke(app, ["token", "--user", "kim"], env={"WSHUB_JWT_SECRET": ""})
    assert missing.exit_code != 0 and "--private-key" in missing.output
    bad = runner.invoke(app, ["token", "--user", "kim", "--private-key", str(tmp_path / "no")])
    assert bad.exit_code != 0 and "cannot read" in bad.output
