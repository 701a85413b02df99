"""atb_identity.proof: signing envelopes with an SVID and verifying who produced them (real crypto).

The tampering tests work on the record bytes a consumer receives: one byte of a
field's value is changed, the record still decodes, and the proof must then fail.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atb_identity import (
    BadSignatureError,
    IdentityError,
    LeafExpiredError,
    MalformedSignatureError,
    MalformedX5cError,
    MissingProofError,
    OriginProofError,
    SourceMismatchError,
    SpiffeId,
    Svid,
    UnsupportedAlgorithmError,
    UntrustedIssuerError,
    sign_envelope,
    verify_envelope,
)
from contracts import (
    Envelope,
    IssuanceRequested,
    LegitimateInterest,
    Proof,
    decode_envelope,
    encode_envelope,
    make_envelope,
    signing_bytes,
)
from tests.unit.test_identity_support import AGENT_ID, AT, DAY, OTHER_AGENT_ID, World, make_leaf, make_svid, world

EVENT_TIME = datetime(2026, 1, 15, 11, 59, 30, 250000, tzinfo=UTC)


@pytest.fixture(scope="session")
def w() -> World:
    return world()


@pytest.fixture(scope="session")
def svid(w: World) -> Svid:
    return make_svid(w.intermediate, intermediates=[w.intermediate])


def issuance(request_id: str = "req-0001", resource: str = "crm:contact/42") -> IssuanceRequested:
    return IssuanceRequested(
        request_id=request_id,
        agent_id=AGENT_ID,
        tenant="acme",
        action="crm.contact.update",
        resource=resource,
        params={"email": "new@example.com", "n": 3},
        leg=LegitimateInterest(
            ref="LI-2024-001",
            jurisdiction="US",
            accountable_party={"type": "employee", "id": "emp-100"},  # type: ignore[arg-type]
        ),
        requested_at=EVENT_TIME,
    )


def event(source: str = AGENT_ID, **changes: str) -> Envelope:
    return make_envelope(
        issuance(**changes), source=source, event_id="6f1c2a9e-0b3d-4c55-9a1e-7d2f8b6c4e10", time=EVENT_TIME
    )


@pytest.fixture(scope="session")
def signed(svid: Svid) -> Envelope:
    return sign_envelope(event(), svid)


def test_a_signed_event_proves_its_source(w: World, signed: Envelope) -> None:
    assert verify_envelope(signed, w.bundle, at=AT) == SpiffeId.parse(AGENT_ID)


def test_the_proof_survives_the_record_bytes(w: World, signed: Envelope) -> None:
    received = decode_envelope(encode_envelope(signed))
    assert verify_envelope(received, w.bundle, at=AT) == SpiffeId.parse(AGENT_ID)


def test_the_proof_is_an_ed25519_signature_over_the_signing_bytes(signed: Envelope, svid: Svid) -> None:
    assert signed.proof is not None
    assert signed.proof.alg == "Ed25519"
    assert signed.proof.x5c == svid.x5c()
    signature = base64.urlsafe_b64decode(signed.proof.sig + "==")
    assert isinstance(svid.key, Ed25519PrivateKey)  # the dev CA's key type
    svid.key.public_key().verify(signature, signing_bytes(signed))  # raises if not
    assert signed.model_copy(update={"proof": None}) == event()


# (field, the value's text in the canonical record, which character of it to change)
TAMPER = [
    ("data-value-first", '"resource":"crm:contact/42"', len('"resource":"')),
    ("data-value-last", '"resource":"crm:contact/42"', len('"resource":"crm:contact/4')),
    ("data-param", '"email":"new@example.com"', len('"email":"n')),
    ("data-integer", '"n":3', len('"n":')),
    ("data-nested-leg", '"id":"emp-100"', len('"id":"emp-10')),
    ("type", '"type":"atb.poa.issuance_requested.v1"', len('"type":"atb.poa.issuance_requested.v')),
    ("id-first", '"id":"6f1c2a9e', len('"id":"')),
    ("id-last", '7d2f8b6c4e10"', len("7d2f8b6c4e1")),
    ("time-second", '"time":"2026-01-15T11:59:30.25', len('"time":"2026-01-15T11:59:3')),
    ("time-fraction", '"time":"2026-01-15T11:59:30.25', len('"time":"2026-01-15T11:59:30.2')),
    ("subject", '"subject":"req-0001"', len('"subject":"req-000')),
    ("partitionkey", '"partitionkey":"req-0001"', len('"partitionkey":"req-000')),
    ("source-td", '"source":"spiffe://atb.local/', len('"source":"spiffe://atb.loca')),
    ("source-path", '"source":"spiffe://atb.local/agent/crm-bot"', len('"source":"spiffe://atb.local/agent/crm-bo')),
]


def _flip(char: int) -> int:
    """Another character of the same kind, so the record still decodes."""
    for first, last in ((ord("0"), ord("9")), (ord("a"), ord("z")), (ord("A"), ord("Z"))):
        if first <= char <= last:
            return first + (char - first + 1) % (last - first + 1)
    raise AssertionError(f"no flip for {chr(char)!r}")


@pytest.mark.parametrize(("needle", "offset"), [pytest.param(n, o, id=i) for i, n, o in TAMPER])
def test_changing_one_byte_of_the_record_breaks_the_proof(w: World, signed: Envelope, needle: str, offset: int) -> None:
    record = bytearray(encode_envelope(signed))
    start = record.find(needle.encode())
    assert record.count(needle.encode()) == 1, needle
    record[start + offset] = _flip(record[start + offset])
    tampered = decode_envelope(bytes(record))
    assert signing_bytes(tampered) != signing_bytes(signed)
    with pytest.raises(BadSignatureError) as caught:
        verify_envelope(tampered, w.bundle, at=AT)
    assert caught.value.code == "bad_signature"


def test_another_valid_svids_chain_does_not_carry_the_signature(w: World, signed: Envelope) -> None:
    assert signed.proof is not None
    for other in (make_svid(w.root), make_svid(w.root, OTHER_AGENT_ID)):  # same ID new key; another ID
        swapped = signed.model_copy(update={"proof": signed.proof.model_copy(update={"x5c": other.x5c()})})
        with pytest.raises(BadSignatureError):
            verify_envelope(swapped, w.bundle, at=AT)


def test_a_proof_moved_onto_another_event_fails(w: World, signed: Envelope) -> None:
    other = event(request_id="req-0002")
    with pytest.raises(BadSignatureError):
        verify_envelope(other.model_copy(update={"proof": signed.proof}), w.bundle, at=AT)


def _with_proof(envelope: Envelope, **changes: object) -> Envelope:
    assert envelope.proof is not None
    proof = Proof.model_construct(**{**envelope.proof.model_dump(), **changes})
    return envelope.model_copy(update={"proof": proof})


def _non_canonical(sig: str) -> str:
    """The same 64 bytes spelled differently: the last character carries 4 unused bits."""
    respelled = sig[:-1] + chr(ord(sig[-1]) + 1)
    assert base64.urlsafe_b64decode(respelled + "==") == base64.urlsafe_b64decode(sig + "==")
    return respelled


def _base64url(item: str) -> str:
    respelled = item.replace("+", "-").replace("/", "_")
    assert respelled != item  # a DER certificate's base64 practically always holds '+' or '/'
    return respelled


Change = Callable[[Proof], dict[str, object]]
MALFORMED: list[tuple[str, Change, type[OriginProofError], str]] = [
    ("sig-truncated", lambda p: {"sig": p.sig[:43]}, MalformedSignatureError, "malformed_signature"),
    ("sig-one-char-short", lambda p: {"sig": p.sig[:-1]}, MalformedSignatureError, "malformed_signature"),
    ("sig-one-char-long", lambda p: {"sig": p.sig + "A"}, MalformedSignatureError, "malformed_signature"),
    ("sig-padded", lambda p: {"sig": p.sig + "=="}, MalformedSignatureError, "malformed_signature"),
    ("sig-standard-base64", lambda p: {"sig": "+/" * 43}, MalformedSignatureError, "malformed_signature"),
    ("sig-non-canonical", lambda p: {"sig": _non_canonical(p.sig)}, MalformedSignatureError, "malformed_signature"),
    ("x5c-not-base64", lambda p: {"x5c": ("not base64!",)}, MalformedX5cError, "malformed_x5c"),
    ("x5c-base64url", lambda p: {"x5c": (_base64url(p.x5c[0]),)}, MalformedX5cError, "malformed_x5c"),
    ("x5c-not-der", lambda p: {"x5c": (base64.b64encode(b"garbage").decode(),)}, MalformedX5cError, "malformed_x5c"),
    ("x5c-truncated-der", lambda p: {"x5c": (p.x5c[0][:-8],)}, MalformedX5cError, "malformed_x5c"),
    ("alg", lambda p: {"alg": "ES256"}, UnsupportedAlgorithmError, "unsupported_algorithm"),
]


@pytest.mark.parametrize(("change", "error", "code"), [pytest.param(*c[1:], id=c[0]) for c in MALFORMED])
def test_a_malformed_proof_is_refused(
    w: World, signed: Envelope, change: Change, error: type[OriginProofError], code: str
) -> None:
    assert signed.proof is not None
    tampered = _with_proof(signed, **change(signed.proof))
    with pytest.raises(error) as caught:
        verify_envelope(tampered, w.bundle, at=AT)
    assert type(caught.value) is error
    assert caught.value.code == code


def test_an_event_without_proof_is_refused(w: World) -> None:
    with pytest.raises(MissingProofError):
        verify_envelope(event(), w.bundle, at=AT)


def test_a_proof_by_an_untrusted_ca_is_refused(w: World) -> None:
    forged = sign_envelope(event(), make_svid(w.stranger))
    with pytest.raises(UntrustedIssuerError):
        verify_envelope(forged, w.bundle, at=AT)


def test_a_proof_by_an_expired_svid_is_refused(w: World) -> None:
    expired = make_svid(w.root, not_before=AT - 3 * DAY, not_after=AT - DAY)
    with pytest.raises(LeafExpiredError):
        verify_envelope(sign_envelope(event(), expired), w.bundle, at=AT)


def test_an_event_whose_source_is_not_the_signer_is_refused(w: World, svid: Svid) -> None:
    # A valid signature by agent A over an event claiming to come from agent B.
    claimed = event(source=OTHER_AGENT_ID)
    assert isinstance(svid.key, Ed25519PrivateKey)
    raw = svid.key.sign(signing_bytes(claimed))
    proof = Proof(sig=base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), x5c=svid.x5c())
    with pytest.raises(SourceMismatchError):
        verify_envelope(claimed.model_copy(update={"proof": proof}), w.bundle, at=AT)


def test_signing_refuses_an_event_of_another_source(svid: Svid) -> None:
    with pytest.raises(SourceMismatchError):
        sign_envelope(event(source=OTHER_AGENT_ID), svid)


def test_a_leaf_key_that_is_not_ed25519_is_refused(w: World, signed: Envelope) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    leaf = make_leaf(w.root, subject_key=ec_key.public_key())
    x5c = (base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode(),)
    with pytest.raises(UnsupportedAlgorithmError):
        verify_envelope(_with_proof(signed, x5c=x5c), w.bundle, at=AT)


def test_every_refusal_is_an_identity_error_with_a_code(w: World) -> None:
    with pytest.raises(IdentityError) as caught:
        verify_envelope(event(), w.bundle, at=AT)
    assert caught.value.code == "missing_proof"
    assert "carries no proof" in caught.value.reason
