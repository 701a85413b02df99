"""Event proofs: sign an envelope with an SVID, and verify who produced one.

A proof (docs/architecture.md §4.5) is a signature by the producer's X.509-SVID key
over `contracts.signing_bytes(envelope)` (the canonical bytes without `proof`),
with the SVID chain as `x5c` and the key's algorithm as `alg`: Ed25519 for an
Ed25519 key, ES256 for EC P-256 (SPIRE's default), ES384 for P-384, RS256 for RSA
(`algorithms`). `verify_envelope` validates the chain against the trust bundle,
derives the one algorithm the leaf's key allows, refuses a proof naming any other,
checks the signature with the leaf's key, and requires the envelope's
self-asserted `source` to be the proven SPIFFE ID. Consumers take identities only
from its return value, never from `source` or payload fields.

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

from atb_identity import algorithms
from atb_identity.errors import (
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

PROOF_ALG: Final = algorithms.ED25519
"""The algorithm of the dev PKI's SVIDs; `algorithms.PROOF_ALGS` holds every accepted one."""
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_envelope(envelope: Envelope, svid: Svid) -> Envelope:
    """A copy of `envelope` carrying a proof by `svid`. The envelope's source must be the SVID's ID."""
    if envelope.source != str(svid.spiffe_id):
        raise SourceMismatchError(f"envelope source {envelope.source!r} is not the signer's ID {svid.spiffe_id}")
    signature = algorithms.sign(svid.key, signing_bytes(envelope))
    proof = Proof(alg=svid.alg, sig=_b64url(signature), x5c=svid.x5c())
    return envelope.model_copy(update={"proof": proof})


def verify_envelope(envelope: Envelope, bundle: TrustBundle, *, at: datetime) -> SpiffeId:
    """The SPIFFE ID that provably produced `envelope`, or raise the named reason it is not proven.

    `at` is the verifier's clock, not the event's self-asserted `time`.
    """
    proof = envelope.proof
    if proof is None:
        raise MissingProofError(f"event {envelope.id} carries no proof of origin")
    if proof.alg not in algorithms.PROOF_ALGS:  # e.g. `none`, in an envelope built without validation
        raise UnsupportedAlgorithmError(f"proof algorithm {proof.alg!r} is not one of {sorted(algorithms.PROOF_ALGS)}")
    leaf, spiffe_id = _validated_chain(proof.x5c, bundle, at)
    _verify_signature(leaf, proof.alg, _decode_signature(proof.sig), signing_bytes(envelope))
    if envelope.source != str(spiffe_id):
        raise SourceMismatchError(f"envelope source {envelope.source!r} is not the proven ID {spiffe_id}")
    return spiffe_id


@dataclass(frozen=True)
class _Validated:
    bundle: TrustBundle
    generation: int
    """The bundle's generation it was validated under (a renewed bundle validates again)."""
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
    if (
        hit is not None
        and hit.bundle is bundle
        and hit.generation == bundle.generation
        and hit.valid_from <= at <= hit.valid_until
    ):
        return hit.leaf, hit.spiffe_id
    chain = _decode_x5c(x5c)
    spiffe_id = validate_svid(chain, bundle, at=at)
    certificates = (*chain, *bundle.roots)
    if len(_VALIDATED) >= _CACHE_LIMIT:
        _VALIDATED.clear()
    _VALIDATED[key] = _Validated(
        bundle=bundle,
        generation=bundle.generation,
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
    """base64url without padding, in its one canonical spelling (the length is the algorithm's, checked later)."""
    if not _B64URL.fullmatch(sig):
        raise MalformedSignatureError("the signature is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except binascii.Error as exc:
        raise MalformedSignatureError(f"the signature is not valid base64url: {exc}") from exc
    if _b64url(raw) != sig:
        raise MalformedSignatureError("the signature is not the canonical base64url encoding of its bytes")
    return raw


def _verify_signature(leaf: x509.Certificate, alg: str, signature: bytes, payload: bytes) -> None:
    """The algorithm comes from the leaf's key; the proof's `alg` must name that one (RFC 8725 §3.1)."""
    key = leaf.public_key()
    if not isinstance(key, algorithms.SvidPublicKey):
        raise UnsupportedAlgorithmError(f"the leaf key is a {type(key).__name__}, which cannot sign proofs")
    algorithms.verify(key, alg, signature, payload)
