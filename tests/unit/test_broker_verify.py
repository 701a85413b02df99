"""broker.adapters.verify: RFC 8725 checks on a presented PoA, each refusal with its own code (real crypto)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from broker.adapters.keys import KeyRing
from broker.adapters.verify import PoaRejectedError, PoaVerifier
from contracts import PoaClaims, sha256_digest
from issuer.adapters.keys import SigningKey, load_or_create_key
from issuer.adapters.signer import PoaSigner

ISSUER = "spiffe://atb.example/service/issuer"
AUDIENCE = "spiffe://atb.example/service/broker"
LEEWAY = 10


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return load_or_create_key(tmp_path / "issuer.pem")


@pytest.fixture
def verifier(key: SigningKey) -> PoaVerifier:
    ring = KeyRing("localhost:1", "")  # never started: no Kafka
    ring.add(key.kid, key.jwk)
    return PoaVerifier(ring, audience=AUDIENCE, issuer=ISSUER, leeway_s=LEEWAY)


def claims_json(**changes: object) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "spiffe://atb.example/agent/crm-bot",
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "0123456789abcdef0123456789abcdef",
        "act": "crm.contact.update",
        "res": "crm:contact/42",
        "req_digest": sha256_digest({"x": 1}),
        "req_id": "req-0001",
        "tier": "medium",
        "leg": {
            "basis": "LI",
            "ref": "LI-2024-001",
            "jurisdiction": "US",
            "accountable_party": {"type": "employee", "id": "emp-100"},
            "approval": {"approver_id": "manager-001", "approved_at": "2024-01-15T09:59:00Z"},
        },
        "cnf": {"x5t#S256": "A" * 43},
        "ver": 1,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def sign(key: SigningKey, payload: dict[str, Any], **header: Any) -> str:
    """Sign with the real issuer key through PyJWT, with the given header on top of the PoA header."""
    headers: dict[str, Any] = {"typ": "poa+jwt", "kid": key.kid, **header}
    for name in [n for n, v in headers.items() if v is None]:
        del headers[name]
    return jwt.encode(payload, key.private, algorithm="EdDSA", headers=headers)


def hs256(key: SigningKey, secret: bytes) -> str:
    """The classic confusion attack: HMAC-sign with the *public* key as the secret."""
    signing_input = b64url_json({"alg": "HS256", "typ": "poa+jwt", "kid": key.kid}) + "." + b64url_json(claims_json())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def sign_by_hand(key: SigningKey, header: dict[str, Any]) -> str:
    signing_input = b64url_json(header) + "." + b64url_json(claims_json())
    return signing_input + "." + b64url(key.private.sign(signing_input.encode()))


def public_pem(key: SigningKey) -> bytes:
    return key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def alg_none(key: SigningKey) -> str:
    return b64url_json({"alg": "none", "typ": "poa+jwt", "kid": key.kid}) + "." + b64url_json(claims_json()) + "."


def flip_payload_char(token: str) -> str:
    header, payload, signature = token.split(".")
    index = len(payload) // 2
    swapped = "B" if payload[index] != "B" else "C"  # stays valid base64url, changes the decoded bytes
    return ".".join((header, payload[:index] + swapped + payload[index + 1 :], signature))


def truncate_signature(keep: int) -> Callable[[str], str]:
    def cut(token: str) -> str:
        header, payload, signature = token.split(".")
        return ".".join((header, payload, signature[:keep]))

    return cut


def test_valid_token_verifies(key: SigningKey, verifier: PoaVerifier) -> None:
    body = claims_json()
    token = PoaSigner(key).sign(PoaClaims.model_validate(body))
    assert verifier.verify(token) == PoaClaims.model_validate(body)


def test_expired_within_leeway_still_verifies(key: SigningKey, verifier: PoaVerifier) -> None:
    now = int(time.time())
    assert verifier.verify(sign(key, claims_json(iat=now - 300, nbf=now - 300, exp=now - LEEWAY // 2))).req_id


NOW = int(time.time())


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """The token table reads NOW when a token is built: keep it current (the suite may run for minutes)."""
    global NOW
    NOW = int(time.time())


TOKENS: list[Any] = [
    pytest.param(alg_none, "alg_not_allowed", id="alg none"),
    pytest.param(lambda k: hs256(k, public_pem(k)), "alg_not_allowed", id="HS256 with the public key PEM"),
    pytest.param(
        lambda k: hs256(
            k, k.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ),
        "alg_not_allowed",
        id="HS256 with the raw public key",
    ),
    pytest.param(lambda k: hs256(k, k.jwk["x"].encode()), "alg_not_allowed", id="HS256 with the JWK x"),
    pytest.param(lambda k: sign(k, claims_json(), typ="JWT"), "wrong_typ", id="typ JWT"),
    pytest.param(lambda k: sign(k, claims_json(), typ="at+jwt"), "wrong_typ", id="typ at+jwt"),
    pytest.param(lambda k: sign(k, claims_json(), typ=None), "wrong_typ", id="no typ"),
    pytest.param(lambda k: sign(k, claims_json(), jku="https://evil.example/jwks"), "forbidden_header", id="jku"),
    pytest.param(lambda k: sign(k, claims_json(), x5u="https://evil.example/cert"), "forbidden_header", id="x5u"),
    pytest.param(lambda k: sign(k, claims_json(), jwk=k.jwk), "forbidden_header", id="embedded jwk"),
    pytest.param(lambda k: sign(k, claims_json(), x5c=["MIIB"]), "forbidden_header", id="x5c"),
    # `crit` would oblige us to understand extensions we do not have: refused like the key-carrying headers.
    pytest.param(lambda k: sign(k, claims_json(), crit=["exp"]), "forbidden_header", id="crit"),
    pytest.param(lambda k: sign(k, claims_json(), kid="unknown-kid"), "unknown_kid", id="unknown kid"),
    pytest.param(lambda k: sign(k, claims_json(), kid=None), "unknown_kid", id="no kid"),
    pytest.param(
        lambda k: sign_by_hand(k, {"alg": "EdDSA", "typ": "poa+jwt", "kid": 7}), "malformed", id="kid not a string"
    ),
    pytest.param(lambda k: sign(k, claims_json(), kid=k.kid.lower()), "unknown_kid", id="kid in another case"),
    pytest.param(lambda k: sign(k, claims_json(iat=NOW - 400, nbf=NOW - 400, exp=NOW - 100)), "expired", id="expired"),
    pytest.param(lambda k: sign(k, claims_json(exp=NOW - LEEWAY - 5)), "expired", id="expired just beyond the leeway"),
    pytest.param(lambda k: sign(k, claims_json(nbf=NOW + 100)), "not_yet_valid", id="nbf in the future"),
    pytest.param(lambda k: sign(k, claims_json(aud="spiffe://atb.example/other")), "wrong_audience", id="wrong aud"),
    pytest.param(lambda k: sign(k, claims_json(aud=[ISSUER])), "wrong_audience", id="aud list without us"),
    pytest.param(lambda k: sign(k, claims_json(iss="spiffe://evil.example/issuer")), "wrong_issuer", id="wrong iss"),
    pytest.param(
        lambda k: flip_payload_char(PoaSigner(k).sign(PoaClaims.model_validate(claims_json()))),
        "bad_signature",
        id="flipped payload byte",
    ),
    # 84 characters always decode (to 63 bytes); 85 never do. Other lengths depend on the signature's last bits.
    pytest.param(lambda k: truncate_signature(84)(sign(k, claims_json())), "bad_signature", id="signature short"),
    pytest.param(lambda k: truncate_signature(0)(sign(k, claims_json())), "bad_signature", id="signature removed"),
    pytest.param(
        lambda k: truncate_signature(85)(sign(k, claims_json())),
        "malformed",
        id="signature one char short (bad base64)",
    ),
    pytest.param(lambda k: sign(k, claims_json(jti=None)), "invalid_token", id="missing jti"),
    pytest.param(lambda k: sign(k, claims_json(exp=None)), "invalid_token", id="missing exp"),
    pytest.param(lambda k: sign(k, claims_json(nbf=None)), "invalid_token", id="missing nbf"),
    pytest.param(lambda k: sign(k, claims_json(sub=None)), "invalid_token", id="missing sub"),
    pytest.param(lambda k: sign(k, claims_json(act=None)), "invalid_claims", id="missing act"),
    pytest.param(lambda k: sign(k, claims_json(extra="x")), "invalid_claims", id="unknown claim"),
    pytest.param(lambda k: sign(k, claims_json(jti="short")), "invalid_claims", id="jti too short"),
    pytest.param(lambda k: "not-a-jwt", "malformed", id="not a JWT"),
    pytest.param(lambda k: "a.b.c", "malformed", id="garbage segments"),
    pytest.param(lambda k: "", "malformed", id="empty"),
]


@pytest.mark.parametrize(("make_token", "code"), TOKENS)
def test_rejected_with_its_code(
    key: SigningKey, verifier: PoaVerifier, make_token: Callable[[SigningKey], str], code: str
) -> None:
    token = make_token(key)
    with pytest.raises(PoaRejectedError) as info:
        verifier.verify(token)
    assert info.value.code == code, info.value.reason
    assert str(info.value).startswith(f"{code}: ")


def test_hand_built_token_with_a_good_header_verifies(key: SigningKey, verifier: PoaVerifier) -> None:
    # The helper itself is sound, so the refusals above come from the header they change.
    assert verifier.verify(sign_by_hand(key, {"alg": "EdDSA", "typ": "poa+jwt", "kid": key.kid})).jti


def test_iat_in_the_future_is_refused(key: SigningKey, verifier: PoaVerifier) -> None:
    now = int(time.time())
    with pytest.raises(PoaRejectedError) as info:
        verifier.verify(sign(key, claims_json(iat=now + 100)))
    assert info.value.code == "not_yet_valid"


def test_poa_living_longer_than_five_minutes_is_refused(key: SigningKey, verifier: PoaVerifier) -> None:
    now = int(time.time())
    with pytest.raises(PoaRejectedError):
        verifier.verify(sign(key, claims_json(iat=now, nbf=now, exp=now + 86400)))


def test_token_of_another_key_under_a_known_kid(key: SigningKey, verifier: PoaVerifier, tmp_path: Path) -> None:
    impostor = load_or_create_key(tmp_path / "impostor.pem")
    forged = jwt.encode(claims_json(), impostor.private, algorithm="EdDSA", headers={"typ": "poa+jwt", "kid": key.kid})
    with pytest.raises(PoaRejectedError) as info:
        verifier.verify(forged)
    assert info.value.code == "bad_signature"


def test_unknown_kid_is_never_allowed_even_when_signed_well(tmp_path: Path, verifier: PoaVerifier) -> None:
    other = load_or_create_key(tmp_path / "other.pem")
    with pytest.raises(PoaRejectedError) as info:
        verifier.verify(PoaSigner(other).sign(PoaClaims.model_validate(claims_json())))
    assert info.value.code == "unknown_kid"


def test_empty_ring_refuses_everything(key: SigningKey) -> None:
    verifier = PoaVerifier(KeyRing("localhost:1", ""), audience=AUDIENCE, issuer=ISSUER)
    with pytest.raises(PoaRejectedError) as info:
        verifier.verify(PoaSigner(key).sign(PoaClaims.model_validate(claims_json())))
    assert info.value.code == "unknown_kid"


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "oct", "k": "c2VjcmV0"},
    ],
)
def test_keyring_accepts_only_ed25519(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="Ed25519"):
        KeyRing("localhost:1", "").add("kid", jwk)
