"""issuer.adapters.signer builds the PoA's compact JWS itself: byte for byte PyJWT's token.

Ed25519 signatures are deterministic, so the whole token can be compared. Claims are
generated with any text in every string claim (non-ASCII, quotes, control characters),
each tier, with and without `cnf`, and under several keys.
"""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import POA_TYP, PoaClaims, Tier, sha256_digest
from issuer.adapters.keys import SigningKey
from issuer.adapters.signer import PoaSigner

KEYS = [
    SigningKey(private=Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32), kid=kid, jwk={})
    for seed, kid in ((1, "kid-one"), (2, "k" * 43), (3, "é-kid"))
]


def _pyjwt(key: SigningKey, claims: PoaClaims) -> str:
    return jwt.encode(
        claims.model_dump(mode="json", exclude_none=True, by_alias=True),
        key.private,
        algorithm="EdDSA",
        headers={"typ": POA_TYP, "kid": key.kid},
    )


@st.composite
def _claims(draw: st.DrawFn) -> PoaClaims:
    iat = draw(st.integers(min_value=0, max_value=2**40))
    text = st.text(max_size=30)
    cnf = draw(st.none() | st.just({"x5t#S256": "A" * 43}))
    leg = {
        "basis": "LI",
        "ref": draw(st.text(min_size=1, max_size=30)),
        "description": draw(text),
        "jurisdiction": draw(st.sampled_from(["US", "DE", "FR"])),
        "accountable_party": {
            "type": draw(st.text(min_size=1, max_size=10)),
            "id": "svc-" + draw(st.from_regex(r"[a-z0-9.@]{0,8}", fullmatch=True)),
        },
        "ticket_ref": draw(st.none() | st.text(max_size=20)),
    }
    body = {
        "iss": draw(text),
        "sub": "spiffe://" + draw(text),
        "aud": draw(text),
        "iat": iat,
        "nbf": iat,
        "exp": iat + draw(st.integers(min_value=1, max_value=300)),
        "jti": draw(st.text(min_size=16, max_size=40)),
        "act": draw(text),
        "res": draw(text),
        "req_digest": sha256_digest({"n": draw(st.integers(min_value=0, max_value=2**32))}),
        "req_id": draw(text),
        "tier": draw(st.sampled_from(list(Tier))),
        "leg": leg,
    }
    if cnf is not None:
        body["cnf"] = cnf
    return PoaClaims.model_validate(body)


@settings(max_examples=300, deadline=None)
@given(claims=_claims(), key=st.sampled_from(KEYS))
def test_tokens_are_pyjwts_byte_for_byte(claims: PoaClaims, key: SigningKey) -> None:
    assert PoaSigner(key).sign(claims) == _pyjwt(key, claims)


@settings(max_examples=20, deadline=None)
@given(claims=_claims(), key=st.sampled_from(KEYS))
def test_the_token_verifies_with_pyjwt_and_names_its_key(claims: PoaClaims, key: SigningKey) -> None:
    token = PoaSigner(key).sign(claims)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": key.kid, "typ": POA_TYP}
    decoded = jwt.decode(
        token,
        key.private.public_key(),
        algorithms=["EdDSA"],
        options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decoded == claims.model_dump(mode="json", exclude_none=True, by_alias=True)
