"""Sign PoA claims as an EdDSA JWT (RFC 7515 compact serialisation) with the key loaded once.

The token is built here rather than by a JWT library: the header depends only on the
key id, so its encoded segment is computed once per kid; the claims are serialised as
PyJWT does (`json.dumps` with compact separators, keys in the claims' order), so the
tokens are byte for byte those PyJWT makes (Ed25519 signatures are deterministic):
tests/unit/test_issuer_signer_jws.py holds the two to that over generated claims.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache

from contracts import POA_TYP, PoaClaims
from issuer.adapters.keys import SigningKey

__all__ = ["PoaSigner"]


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@lru_cache(maxsize=64)
def _header_segment(kid: str) -> bytes:
    """The encoded protected header for `kid`: {"alg", "kid", "typ"}, keys sorted, compact."""
    header = {"alg": PoaSigner.ALGORITHM, "kid": kid, "typ": POA_TYP}
    return _b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())


class PoaSigner:
    ALGORITHM = "EdDSA"

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    @property
    def kid(self) -> str:
        return self._key.kid

    def sign(self, claims: PoaClaims) -> str:
        payload = json.dumps(claims.model_dump(mode="json", exclude_none=True, by_alias=True), separators=(",", ":"))
        signing_input = _header_segment(self._key.kid) + b"." + _b64url(payload.encode())
        return (signing_input + b"." + _b64url(self._key.private.sign(signing_input))).decode()
