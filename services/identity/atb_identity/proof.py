"""Event proofs: sign an envelope with an SVID, and verify who produced one.

A proof (docs/architecture.md §4.5) is an Ed25519 signature by the producer's X.509-SVID key
over `contracts.signing_bytes(envelope)` (the canonical bytes without `proof`),
with the SVID chain as `x5c`. `verify_envelope` validates the chain against the
trust bundle, checks the signature with the leaf's key, and requires the
envelope's self-asserted `source` to be the proven SPIFFE ID. Consumers take
identities only from its return value, never from `source` or payload fields.

This module does not choose the bundle or the clock, and does not dead-letter:
its errors carry a stable `code` for the caller to record.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from atb_identity.errors import (
    BadSignatureError,
    MalformedSignatureError,
    MalformedX5cError,
    MissingProofError,
    SourceMismatchError,
    UnsupportedAlgorithmError,
)
from atb_identity.spiffe import SpiffeId
from atb_identity.svid import Svid, TrustBundle, validate_svid
from contracts import Envelope, Proof, signing_bytes

__all__ = ["PROOF_ALG", "sign_envelope", "verify_envelope"]

PROOF_ALG: Final = "Ed25519"
_SIGNATURE_BYTES = 64  # RFC 8032 §5.1.6
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_envelope(envelope: Envelope, svid: Svid) -> Envelope:
    """A copy of `envelope` carrying a proof by `svid`. The envelope's source must be the SVID's ID."""
    if envelope.source != str(svid.spiffe_id):
        raise SourceMismatchError(f"envelope source {envelope.source!r} is not the signer's ID {svid.spiffe_id}")
    signature = svid.key.sign(signing_bytes(envelope))
    proof = Proof(alg=PROOF_ALG, sig=_b64url(signature), x5c=svid.x5c())
    return envelope.model_copy(update={"proof": proof})


def verify_envelope(envelope: Envelope, bundle: TrustBundle, *, at: datetime) -> SpiffeId:
    """The SPIFFE ID that provably produced `envelope`, or raise the named reason it is not proven.

    `at` is the verifier's clock, not the event's self-asserted `time`.
    """
    proof = envelope.proof
    if proof is None:
        raise MissingProofError(f"event {envelope.id} carries no proof of origin")
    if proof.alg != PROOF_ALG:
        raise UnsupportedAlgorithmError(f"proof algorithm {proof.alg!r} is not {PROOF_ALG}")
    leaf, spiffe_id = _validated_chain(proof.x5c, bundle, at)
    _verify_signature(leaf, _decode_signature(proof.sig), signing_bytes(envelope))
    if envelope.source != str(spiffe_id):
        raise SourceMismatchError(f"envelope source {envelope.source!r} is not the proven ID {spiffe_id}")
    return spiffe_id


@dataclass(frozen=True)
class _Validated:
    bundle: TrustBundle
    leaf: x509.Certificate
    spiffe_id: SpiffeId
    valid_from: datetime
    valid_until: datetime


_VALIDATED: dict[tuple[str, ...], _Validated] = {}
_CACHE_LIMIT = 4096


def _validated_chain(x5c: Sequence[str], bundle: TrustBundle, at: datetime) -> tuple[x509.Certificate, SpiffeId]:
    """validate_svid, remembered for a chain that passed it.

    Every check of validate_svid depends only on the chain, the bundle and the time,
    and the time only through validity periods: a chain that passed stays valid for
    the same bundle inside the intersection of its certificates' (and the roots')
    validity periods. Failures are never cached. The producer's chain is the same for
    every event it signs, so this turns two certificate-signature checks per event
    into one dictionary lookup (the event's own signature is still checked every time).
    """
    key = tuple(x5c)
    hit = _VALIDATED.get(key)
    if hit is not None and hit.bundle is bundle and hit.valid_from <= at <= hit.valid_until:
        return hit.leaf, hit.spiffe_id
    chain = _decode_x5c(x5c)
    spiffe_id = validate_svid(chain, bundle, at=at)
    certificates = (*chain, *bundle.roots)
    if len(_VALIDATED) >= _CACHE_LIMIT:
        _VALIDATED.clear()
    _VALIDATED[key] = _Validated(
        bundle=bundle,
        leaf=chain[0],
        spiffe_id=spiffe_id,
        valid_from=max(c.not_valid_before_utc for c in certificates),
        valid_until=min(c.not_valid_after_utc for c in certificates),
    )
    return chain[0], spiffe_id


def _decode_x5c(x5c: Sequence[str]) -> tuple[x509.Certificate, ...]:
    """RFC 7515 §4.1.6: each entry is standard base64 (not base64url) of one DER certificate."""
    chain = []
    for index, entry in enumerate(x5c):
        try:
            chain.append(x509.load_der_x509_certificate(base64.b64decode(entry, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise MalformedX5cError(f"x5c[{index}] is not a base64 DER certificate: {exc}") from exc
    return tuple(chain)


def _decode_signature(sig: str) -> bytes:
    """base64url without padding, in its one canonical spelling, of exactly 64 bytes."""
    if not _B64URL.fullmatch(sig):
        raise MalformedSignatureError("the signature is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except binascii.Error as exc:
        raise MalformedSignatureError(f"the signature is not valid base64url: {exc}") from exc
    if len(raw) != _SIGNATURE_BYTES or _b64url(raw) != sig:
        raise MalformedSignatureError(f"the signature is not the canonical encoding of {_SIGNATURE_BYTES} bytes")
    return raw


def _verify_signature(leaf: x509.Certificate, signature: bytes, payload: bytes) -> None:
    key = leaf.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise UnsupportedAlgorithmError(f"the leaf key is {type(key).__name__}, proofs need Ed25519")
    try:
        key.verify(signature, payload)
    except InvalidSignature as exc:
        raise BadSignatureError("the proof signature does not match the event's canonical bytes") from exc
