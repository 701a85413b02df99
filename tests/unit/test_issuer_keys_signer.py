"""issuer.adapters.keys + signer: Ed25519 keys on disk, RFC 7638 kids, EdDSA PoA tokens (real crypto)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import OKPKey

from contracts import POA_TYP, PoaClaims, sha256_digest
from issuer.adapters.keys import SigningKey, jwk_of, load_or_create_key, thumbprint
from issuer.adapters.signer import PoaSigner

# RFC 8037 Appendix A.2 / A.3: the Ed25519 public key and its RFC 7638 thumbprint.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"

ISSUER = "spiffe://atb.example/service/issuer"
AUDIENCE = "spiffe://atb.example/service/broker"


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "issuer" / "poa-signing.pem"


@pytest.fixture
def key(key_path: Path) -> SigningKey:
    return load_or_create_key(key_path)


def make_claims(cnf: str | None = "A" * 43) -> PoaClaims:
    return PoaClaims.model_validate(
        {
            "iss": ISSUER,
            "sub": "spiffe://atb.example/agent/crm-bot",
            "aud": AUDIENCE,
            "iat": 1705312800,
            "nbf": 1705312800,
            "exp": 1705313100,
            "jti": "0123456789abcdef0123456789abcdef",
            "act": "crm.contact.update",
            "res": "crm:contact/42",
            "req_digest": sha256_digest({"x": 1}),
            "req_id": "req-0001",
            "tier": "high",
            "leg": {
                "basis": "CONSENT",
                "ref": "CONSENT-TOKEN-abc123",
                "data_subject": "user@example.com",
                "purpose": "Marketing email",
                "jurisdiction": "EU",
                "accountable_party": {"type": "employee", "id": "emp-200"},
                "dual_control": {
                    "required": True,
                    "approvers": [{"id": "approver-a", "type": "manager"}, {"id": "approver-b", "type": "compliance"}],
                },
            },
            "cnf": {"x5t#S256": cnf} if cnf else None,
        }
    )


def test_rfc8037_thumbprint() -> None:
    assert thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}) == RFC8037_THUMBPRINT


def test_thumbprint_ignores_optional_members() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "alg": "EdDSA", "use": "sig", "kid": "whatever"}
    assert thumbprint(jwk) == RFC8037_THUMBPRINT


def test_jwk_of_rfc8037_private_key() -> None:
    private = Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))
    assert jwk_of(private.public_key()) == {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}


def test_key_created_with_mode_0600(key_path: Path, key: SigningKey) -> None:
    assert key_path.exists()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(key.private, Ed25519PrivateKey)


def test_key_reloaded_identically(key_path: Path, key: SigningKey) -> None:
    pem = key_path.read_bytes()
    again = load_or_create_key(key_path)
    assert key_path.read_bytes() == pem
    assert again.kid == key.kid
    assert again.jwk == key.jwk
    raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    assert again.private.private_bytes(*raw) == key.private.private_bytes(*raw)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_two_paths_give_two_keys(tmp_path: Path) -> None:
    assert load_or_create_key(tmp_path / "a.pem").kid != load_or_create_key(tmp_path / "b.pem").kid


def test_existing_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_or_create_key(path)


def test_kid_is_the_rfc7638_thumbprint(key: SigningKey) -> None:
    assert key.kid == thumbprint(key.jwk)
    assert key.jwk["kid"] == key.kid
    assert key.jwk["kty"] == "OKP"
    assert key.jwk["crv"] == "Ed25519"
    assert key.jwk["alg"] == "EdDSA"
    assert key.jwk["use"] == "sig"
    assert "d" not in key.jwk
    raw_public = key.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert b64url_decode(key.jwk["x"]) == raw_public
    # An independent implementation agrees.
    assert OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": key.jwk["x"]}).thumbprint() == key.kid


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


@pytest.mark.parametrize("cnf", ["A" * 43, None])
def test_token_header_and_payload(key: SigningKey, cnf: str | None) -> None:
    claims = make_claims(cnf)
    token = PoaSigner(key).sign(claims)
    header, payload = _segments(token)
    assert header == {"alg": "EdDSA", "typ": POA_TYP, "kid": key.kid}
    assert POA_TYP == "poa+jwt"
    assert payload == claims.model_dump(mode="json", exclude_none=True, by_alias=True)
    if cnf:
        assert payload["cnf"] == {"x5t#S256": cnf}
    else:
        assert "cnf" not in payload
    assert "approval" not in payload["leg"]
    assert PoaSigner(key).kid == key.kid


def test_token_verifies_with_pyjwt(key: SigningKey) -> None:
    claims = make_claims()
    token = PoaSigner(key).sign(claims)
    decoded = jwt.decode(
        token,
        key.private.public_key(),
        algorithms=["EdDSA"],
        audience=AUDIENCE,
        issuer=ISSUER,
        # NOTE: the pinned claims are from 2024; expiry is the verifier's business, not the signer's.
        options={"verify_exp": False, "require": ["exp", "nbf", "iat", "jti", "iss", "sub", "aud"]},
    )
    assert PoaClaims.model_validate(decoded) == claims


def joserfc_public(key: SigningKey) -> OKPKey:
    members: dict[str, str | list[str]] = {name: key.jwk[name] for name in ("kty", "crv", "x")}
    return OKPKey.import_key(members)


# NOTE: joserfc 1.8 warns that `EdDSA` is deprecated by RFC 9864 (fully-specified `Ed25519`);
# docs/architecture.md §5.1 pins `EdDSA`, which is what is being verified here.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")
def test_token_verifies_with_joserfc(key: SigningKey) -> None:
    claims = make_claims()
    token = PoaSigner(key).sign(claims)
    public = joserfc_public(key)
    decoded = jose_jwt.decode(token, public, algorithms=["EdDSA"])
    assert decoded.header == {"alg": "EdDSA", "typ": "poa+jwt", "kid": key.kid}
    assert PoaClaims.model_validate(decoded.claims) == claims


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")
def test_token_from_another_key_does_not_verify(key: SigningKey, tmp_path: Path) -> None:
    other = load_or_create_key(tmp_path / "other.pem")
    token = PoaSigner(other).sign(make_claims())
    with pytest.raises(BadSignatureError):
        jose_jwt.decode(token, joserfc_public(key), algorithms=["EdDSA"])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token, key.private.public_key(), algorithms=["EdDSA"], options={"verify_exp": False}, audience=AUDIENCE
        )


def test_signing_is_deterministic(key: SigningKey) -> None:
    # Ed25519 signatures are deterministic (RFC 8032): same key, same claims, same token.
    assert PoaSigner(key).sign(make_claims()) == PoaSigner(key).sign(make_claims())
