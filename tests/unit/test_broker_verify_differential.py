"""Both PoA verifiers give the same answer to every token: ours (production) and PyJWT's.

broker/adapters/verify.py keeps its own compact-JWS parser because PyJWT cannot
reach the broker's throughput goal (bench/broker_decisions.py). The price is
this test: `PoaVerifier` and `LibraryPoaVerifier` must answer alike (the same
refusal code, or the same claims) over

- the whole negative corpus of tests/unit/test_broker_corpus.py and
  tests/unit/test_broker_verify.py (a token the broker refuses later, at the
  bindings, must be accepted by both);
- Wycheproof's Ed25519 vectors (tests/unit/data/wycheproof_ed25519.json, 151
  vectors from C2SP/wycheproof, Apache 2.0; no Wycheproof package is on PyPI):
  each verifier's signature step against Wycheproof's verdict, and each
  signature spliced into a PoA under the vector's key;
- generated edge cases on our own key: every bit of the signature flipped,
  non-canonical S (S + L, S + 2L, ...), small-order R, every length from 0 to
  96 bytes, and a small-order public key.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.adapters.keys import KeyRing
from broker.adapters.verify import LibraryPoaVerifier, PoaRejectedError, PoaVerifier
from contracts import PoaClaims
from issuer.adapters.keys import SigningKey, load_or_create_key
from tests.unit import test_broker_corpus as corpus
from tests.unit import test_broker_verify as unit

VECTORS = Path(__file__).parent / "data" / "wycheproof_ed25519.json"
L = 2**252 + 27742317777372353535851937790883648493
"""The order of the Ed25519 base point: a signature's S must be below it (RFC 8032 §5.1.7)."""
SMALL_ORDER = (
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity (order 1)
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
)
"""Encodings of the eight points of small order (Bernstein et al., and Wycheproof's own vectors)."""
_VERIFIER_CODES = frozenset(
    {
        "malformed",
        "alg_not_allowed",
        "wrong_typ",
        "forbidden_header",
        "unknown_kid",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "invalid_token",
        "invalid_claims",
    }
)


def answer(verify: Callable[[str], PoaClaims], token: str) -> str | PoaClaims:
    try:
        return verify(token)
    except PoaRejectedError as exc:
        return exc.code


def both(ring: KeyRing, token: str, audience: str, issuer: str) -> tuple[str | PoaClaims, str | PoaClaims]:
    ours = PoaVerifier(ring, audience=audience, issuer=issuer, leeway_s=unit.LEEWAY)
    pyjwt = LibraryPoaVerifier(ring, audience=audience, issuer=issuer, leeway_s=unit.LEEWAY)
    return answer(ours.verify, token), answer(pyjwt.verify, token)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return load_or_create_key(tmp_path_factory.mktemp("key") / "issuer.pem")


@pytest.fixture(scope="module")
def ring(key: SigningKey) -> KeyRing:
    keys = KeyRing("localhost:1", "")  # never started: no Kafka
    keys.add(key.kid, key.jwk)
    return keys


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_signature(token: str, signature: bytes) -> str:
    head, body, _ = token.split(".")
    return f"{head}.{body}.{b64url(signature)}"


# 1. The negative corpus.


@pytest.mark.parametrize("case", corpus.CASES, ids=[c.id for c in corpus.CASES])
def test_the_corpus_gets_one_answer(key: SigningKey, ring: KeyRing, case: corpus.Case) -> None:
    token = case.token(key)
    ours, pyjwt = both(ring, token, corpus.AUDIENCE, corpus.ISSUER)
    assert ours == pyjwt
    # A refusal of the verifier carries the corpus's code; a later one (bindings) means both accepted it.
    assert ours == case.code if case.code in _VERIFIER_CODES else isinstance(ours, PoaClaims)


@pytest.mark.parametrize(("make_token", "code"), unit.TOKENS)
def test_the_verifier_tokens_get_one_answer(
    key: SigningKey, ring: KeyRing, make_token: Callable[[SigningKey], str], code: str
) -> None:
    unit.NOW = int(time.time())
    ours, pyjwt = both(ring, make_token(key), unit.AUDIENCE, unit.ISSUER)
    assert ours == pyjwt == code


def test_a_good_token_gets_the_same_claims(key: SigningKey, ring: KeyRing) -> None:
    ours, pyjwt = both(ring, corpus.good(key), corpus.AUDIENCE, corpus.ISSUER)
    assert isinstance(ours, PoaClaims)
    assert ours == pyjwt


# 2. Wycheproof's Ed25519 vectors.


def _vectors() -> Iterator[Any]:
    data = json.loads(VECTORS.read_text())
    for group in data["testGroups"]:
        for test in group["tests"]:
            yield pytest.param(group["pk"], test, id=f"tc{test['tcId']} {' '.join(test['flags'])}")


VECTOR_PARAMS = list(_vectors())


def test_all_vectors_are_there() -> None:
    assert len(VECTOR_PARAMS) == json.loads(VECTORS.read_text())["numberOfTests"] == 151


@pytest.mark.parametrize(("pk", "test"), VECTOR_PARAMS)
def test_the_signature_step_of_both_follows_wycheproof(pk: str, test: dict[str, Any]) -> None:
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pk))
    msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    try:  # what PoaVerifier does
        public.verify(sig, msg)
        ours = True
    except (InvalidSignature, ValueError):
        ours = False
    pyjwt = jwt.PyJWS().get_algorithm_by_name("EdDSA").verify(msg, public, sig)
    assert ours == pyjwt == (test["result"] == "valid"), test["comment"]


@pytest.mark.parametrize(("pk", "test"), VECTOR_PARAMS)
def test_each_vector_signature_on_a_poa_is_refused_alike(key: SigningKey, pk: str, test: dict[str, Any]) -> None:
    """The vector's signature is over its own message, never over our token: refused by both, alike."""
    ring = KeyRing("localhost:1", "")
    ring.add("wycheproof", {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes.fromhex(pk))})
    token = corpus.by_hand(key, corpus.header(key, kid="wycheproof"), corpus.claims())
    ours, pyjwt = both(ring, with_signature(token, bytes.fromhex(test["sig"])), corpus.AUDIENCE, corpus.ISSUER)
    assert ours == pyjwt == "bad_signature"


# 3. Generated edge cases on our own key.


def _edge_signatures(good: bytes) -> Iterator[tuple[str, bytes]]:
    for bit in range(len(good) * 8):
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        yield f"bit {bit} flipped", bytes(flipped)
    r, s = good[:32], int.from_bytes(good[32:], "little")
    multiple = 1
    while s + multiple * L < 2**256:
        yield f"S + {multiple}L", r + (s + multiple * L).to_bytes(32, "little")
        multiple += 1
    yield "S = L", r + L.to_bytes(32, "little")
    yield "S = 2^256 - 1", r + b"\xff" * 32
    for point in SMALL_ORDER:
        yield f"small-order R {point[:8]}", bytes.fromhex(point) + good[32:]
        yield f"small-order R {point[:8]}, S = 0", bytes.fromhex(point) + bytes(32)
    for length in range(97):
        if length != 64:
            yield f"{length} bytes", (good * 2)[:length]
    yield "all zero", bytes(64)


def test_generated_signature_edge_cases_are_refused_alike(key: SigningKey, ring: KeyRing) -> None:
    token = corpus.good(key)
    assert both(ring, token, corpus.AUDIENCE, corpus.ISSUER)[0] != "bad_signature"
    good = unb64url(token.split(".")[2])
    seen = 0
    for name, signature in _edge_signatures(good):
        ours, pyjwt = both(ring, with_signature(token, signature), corpus.AUDIENCE, corpus.ISSUER)
        assert (name, ours) == (name, pyjwt) == (name, "bad_signature")
        seen += 1
    assert seen > 512 + 8 * 2 + 90


def test_small_order_public_keys_are_answered_alike(key: SigningKey) -> None:
    """Under a small-order key, (R, S) = (small-order point, 0) can verify for every message.

    Both verifiers share that step (cryptography's Ed25519, OpenSSL's cofactorless check), so they
    answer alike, and both accept some of these forgeries: hence the keyring's refusal, next.
    """
    accepted = 0
    for point in SMALL_ORDER:
        ring = KeyRing("localhost:1", "")
        ring._keys["small"] = Ed25519PublicKey.from_public_bytes(bytes.fromhex(point))  # past add(): see below
        token = corpus.by_hand(key, corpus.header(key, kid="small"), corpus.claims())
        for r in SMALL_ORDER:
            ours, pyjwt = both(
                ring, with_signature(token, bytes.fromhex(r) + bytes(32)), corpus.AUDIENCE, corpus.ISSUER
            )
            assert ours == pyjwt, (point, r)
            accepted += isinstance(ours, PoaClaims)
    assert accepted > 0


@pytest.mark.parametrize("point", SMALL_ORDER)
def test_the_keyring_refuses_small_order_keys(point: str) -> None:
    for sign in (0, 0x80):  # with the sign bit cleared and set
        raw = bytearray.fromhex(point)
        raw[31] = (raw[31] & 0x7F) | sign
        with pytest.raises(ValueError, match="small-order"):
            KeyRing("localhost:1", "").add("small", {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(raw))})
