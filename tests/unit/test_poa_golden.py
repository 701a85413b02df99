"""Golden PoA tokens pin the format: header, claim names, encoding, signature.

The key is the Ed25519 test key of RFC 8037 Appendix A.1 (a published test
vector, not a secret). Ed25519 signatures are deterministic, so the same claims
always give the same token; any change to the format changes these strings.
Both our verifier path (PyJWT) and an independent JOSE library (joserfc) accept them.
"""

from __future__ import annotations

import base64
import json
import warnings
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt as jose_jwt
from joserfc.jwk import OKPKey

from contracts import (
    AccountableParty,
    ContractualNecessity,
    CountedVote,
    IssuanceRequested,
    PoaClaims,
    QuorumReached,
    Tier,
    digest_of,
)
from issuer.adapters.keys import SigningKey, jwk_of, thumbprint
from issuer.adapters.signer import PoaSigner
from issuer.domain import build_claims

RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def _key() -> SigningKey:
    private = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(RFC8037_D + "="))
    jwk = {**jwk_of(private.public_key()), "alg": "EdDSA", "use": "sig"}
    return SigningKey(private=private, kid=thumbprint(jwk), jwk={**jwk, "kid": thumbprint(jwk)})


REQUEST = IssuanceRequested(
    request_id="req-golden",
    agent_id="spiffe://atb.local/agent/finance-bot",
    tenant="acme",
    action="sap.payment.execute",
    resource="sap:invoice/4711",
    params={"amount_cents": 1250000, "currency": "EUR"},
    leg=ContractualNecessity(
        ref="MSA-12345",
        description="Pay invoice 4711",
        jurisdiction="EU",
        accountable_party=AccountableParty(type="employee", id="emp-200"),
    ),
    requested_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    agent_cert_thumbprint="1n8m2-l5l33rMLxZHMncRQ9mjGoqjNSTpbvnEfUFbPQ",
)
T = datetime(2026, 11, 25, 12, 5, tzinfo=UTC)
QUORUM = QuorumReached(
    request_id="req-golden",
    tier=Tier.HIGH,
    required_approvals=2,
    request_digest=digest_of(REQUEST),
    poa_ttl_seconds=120,
    request=REQUEST,
    request_event="{}",
    votes=(
        CountedVote(
            approver_id="alice", approver_type="manager", vote_digest="sha256:" + "a" * 64, cast_at=T, vote_event="{}"
        ),
        CountedVote(
            approver_id="bob", approver_type="compliance", vote_digest="sha256:" + "b" * 64, cast_at=T, vote_event="{}"
        ),
    ),
    decided_at=T,
)
NOW = int(T.timestamp())
CLAIMS = build_claims(
    QUORUM,
    issuer="spiffe://atb.local/svc/issuer",
    audience="spiffe://atb.local/svc/broker",
    now=NOW,
    jti="8f14e45fceea167a5a36dedd4bea2543",
    cnf_thumbprint=REQUEST.agent_cert_thumbprint,
)
GOLDEN_HIGH = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3VHhIQ1R3WEJ5Z3JTNGsiLCJ0eXAiOiJwb2Erand0In0."
    "eyJpc3MiOiJzcGlmZmU6Ly9hdGIubG9jYWwvc3ZjL2lzc3VlciIsInN1YiI6InNwaWZmZTovL2F0Yi5sb2NhbC9hZ2VudC9maW5h"
    "bmNlLWJvdCIsImF1ZCI6InNwaWZmZTovL2F0Yi5sb2NhbC9zdmMvYnJva2VyIiwiaWF0IjoxNzk1NjA4MzAwLCJuYmYiOjE3OTU2"
    "MDgzMDAsImV4cCI6MTc5NTYwODQyMCwianRpIjoiOGYxNGU0NWZjZWVhMTY3YTVhMzZkZWRkNGJlYTI1NDMiLCJhY3QiOiJzYXAu"
    "cGF5bWVudC5leGVjdXRlIiwicmVzIjoic2FwOmludm9pY2UvNDcxMSIsInJlcV9kaWdlc3QiOiJzaGEyNTZ2MjoyMzA5ZmE1MzA0"
    "YmFmOGRlYTdlZGVhYmJhNjRlNWVmZWYyZjEyZGU5NGVlMjNlNjIyMjBmNWU2ZmNlNThmYTlmIiwicmVxX2lkIjoicmVxLWdvbGRl"
    "biIsInRpZXIiOiJoaWdoIiwibGVnIjp7Imp1cmlzZGljdGlvbiI6IkVVIiwiYWNjb3VudGFibGVfcGFydHkiOnsidHlwZSI6ImVt"
    "cGxveWVlIiwiaWQiOiJlbXAtMjAwIn0sImR1YWxfY29udHJvbCI6eyJyZXF1aXJlZCI6dHJ1ZSwiYXBwcm92ZXJzIjpbeyJpZCI6"
    "ImFsaWNlIiwidHlwZSI6Im1hbmFnZXIiLCJ2b3RlX2RpZ2VzdCI6InNoYTI1NjphYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"
    "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhIn0seyJpZCI6ImJvYiIsInR5cGUiOiJjb21wbGlhbmNlIiwidm90"
    "ZV9kaWdlc3QiOiJzaGEyNTY6YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJi"
    "YmJiYmJiYiJ9XX0sImJhc2lzIjoiQ09OVFJBQ1QiLCJyZWYiOiJNU0EtMTIzNDUiLCJkZXNjcmlwdGlvbiI6IlBheSBpbnZvaWNl"
    "IDQ3MTEifSwiY25mIjp7Ing1dCNTMjU2IjoiMW44bTItbDVsMzNyTUx4WkhNbmNSUTltakdvcWpOU1RwYnZuRWZVRmJQUSJ9LCJ2"
    "ZXIiOjF9.lmT22t-o_uEtJaxfi-rey0bJYGjYZNk4fmuCy4C2ChCepMVJ1MlLRogxDR1ZHctKPj-XAbddXu-BpwY47rqZBQ"
)


def _token() -> str:
    return PoaSigner(_key()).sign(CLAIMS)


def test_kid_is_the_rfc7638_thumbprint_of_the_rfc8037_key() -> None:
    assert _key().kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert _key().jwk["x"] == RFC8037_X


def test_golden_token_is_stable() -> None:
    assert _token() == GOLDEN_HIGH


def test_header_and_claims_of_the_golden_token() -> None:
    header = jwt.get_unverified_header(GOLDEN_HIGH)
    assert header == {"alg": "EdDSA", "kid": _key().kid, "typ": "poa+jwt"}
    claims = json.loads(base64.urlsafe_b64decode(GOLDEN_HIGH.split(".")[1] + "=="))
    assert PoaClaims.model_validate(claims) == CLAIMS
    assert claims["cnf"] == {"x5t#S256": REQUEST.agent_cert_thumbprint}
    assert claims["exp"] - claims["iat"] == 120
    assert claims["req_digest"].startswith("sha256v2:")
    assert claims["leg"]["dual_control"] == {
        "required": True,
        "approvers": [
            {"id": "alice", "type": "manager", "vote_digest": "sha256:" + "a" * 64},
            {"id": "bob", "type": "compliance", "vote_digest": "sha256:" + "b" * 64},
        ],
    }


def test_golden_token_verifies_with_pyjwt() -> None:
    claims = jwt.decode(
        GOLDEN_HIGH,
        _key().private.public_key(),
        algorithms=["EdDSA"],
        audience="spiffe://atb.local/svc/broker",
        issuer="spiffe://atb.local/svc/issuer",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},  # NOTE: a fixed past time
    )
    assert claims["jti"] == "8f14e45fceea167a5a36dedd4bea2543"


def test_golden_token_verifies_with_joserfc() -> None:
    key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})
    with warnings.catch_warnings():
        # NOTE: joserfc warns that RFC 9864 deprecates the name EdDSA; we pin it on purpose.
        warnings.simplefilter("ignore")
        token = jose_jwt.decode(GOLDEN_HIGH, key, algorithms=["EdDSA"])
    assert token.header["typ"] == "poa+jwt"
    assert token.claims["sub"] == "spiffe://atb.local/agent/finance-bot"
    assert token.claims["req_digest"] == digest_of(REQUEST)


def test_a_flipped_byte_fails_both_libraries() -> None:
    head, body, sig = GOLDEN_HIGH.split(".")
    tampered = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{sig}"
    key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(
            tampered,
            _key().private.public_key(),
            algorithms=["EdDSA"],
            options={"verify_aud": False, "verify_exp": False},
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            jose_jwt.decode(tampered, key, algorithms=["EdDSA"])
        except Exception:
            return
    raise AssertionError("joserfc accepted a tampered token")
