"""Verify a PoA JWT (RFC 8725): pinned algorithm, explicit type, known key, required claims.

Returns the validated claims or raises PoaRejectedError with a stable code.
`kid` and every header are untrusted input: they only select among keys we
already hold; `jku`, `x5u`, `jwk`, `x5c` and `crit` headers are refused outright.

The compact serialization is parsed here rather than by a general JWT library:
one algorithm, one key type and a fixed claim set make it short, every refusal
gets its own code, and it avoids a per-character base64 check that cost more
than the signature itself (bench/broker_decisions.py). Order of checks: shape,
header (alg, typ, forbidden members, kid), canonical base64url of every part
(no unused bits set: one token, one spelling), signature, then claims, so
nothing from an unsigned payload is ever interpreted.
"""

from __future__ import annotations

import base64
import binascii
import re
import time

import orjson
from cryptography.exceptions import InvalidSignature
from pydantic import ValidationError

from broker.adapters.keys import KeyRing
from contracts import POA_TYP, PoaClaims

__all__ = ["PoaRejectedError", "PoaVerifier"]

_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
_REQUIRED = ("exp", "nbf", "iat", "jti", "iss", "sub", "aud")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = {
    2: frozenset(c for i, c in enumerate(_ALPHABET) if i & 0b1111 == 0),
    3: frozenset(c for i, c in enumerate(_ALPHABET) if i & 0b11 == 0),
}
"""The last character of a segment whose length is 2 or 3 mod 4 carries 4 or 2 unused bits: they must
be zero (RFC 4648 §3.5), else 16 (or 4) strings decode to the same bytes and anything keyed on the
token's text or hash, rather than its `jti`, could be presented twice."""
MAX_TOKEN_BYTES = 16 * 1024


class PoaRejectedError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def _b64(segment: str, what: str) -> bytes:
    tail = len(segment) % 4
    if tail == 1 or _SEGMENT.fullmatch(segment) is None:
        raise PoaRejectedError("malformed", f"{what} is not base64url")
    if tail and segment[-1] not in _CANONICAL_LAST[tail]:
        raise PoaRejectedError("malformed", f"{what} is not canonical base64url (unused bits set)")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PoaRejectedError("malformed", f"{what} is not base64url") from exc


def _json_object(raw: bytes, code: str, what: str) -> dict[str, object]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoaRejectedError(code, f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise PoaRejectedError(code, f"{what} is not a JSON object")
    return value


def _int_claim(claims: dict[str, object], name: str) -> int:
    value = claims[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise PoaRejectedError("invalid_token", f"{name} must be an integer")
    return value


class PoaVerifier:
    ALGORITHMS = ("EdDSA",)

    def __init__(self, keys: KeyRing, *, audience: str, issuer: str, leeway_s: int = 10) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s

    def verify(self, token: str, now: float | None = None) -> PoaClaims:
        if len(token) > MAX_TOKEN_BYTES:
            raise PoaRejectedError("malformed", f"token longer than {MAX_TOKEN_BYTES} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            raise PoaRejectedError("malformed", "not a compact JWS (three dot-separated parts)")
        head_b64, body_b64, sig_b64 = parts
        header = _json_object(_b64(head_b64, "header"), "malformed", "header")
        alg = header.get("alg")
        if alg not in self.ALGORITHMS:
            raise PoaRejectedError("alg_not_allowed", f"alg {alg!r} is not allowed")
        if header.get("typ") != POA_TYP:
            raise PoaRejectedError("wrong_typ", f"typ must be {POA_TYP}")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise PoaRejectedError("forbidden_header", f"header {name!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise PoaRejectedError("malformed", "kid must be a string")
        key = self._keys.get(kid) if kid else None
        if key is None:
            raise PoaRejectedError("unknown_kid", "signing key not known")
        body = _b64(body_b64, "payload")  # decoded (every part must be canonical), not yet read
        signature = _b64(sig_b64, "signature")
        try:
            key.verify(signature, f"{head_b64}.{body_b64}".encode("ascii"))
        except (InvalidSignature, ValueError) as exc:
            raise PoaRejectedError("bad_signature", "signature does not verify") from exc
        # Signed: from here on the payload is the issuer's, but still checked.
        claims = _json_object(body, "invalid_token", "payload")
        self._check_registered(claims, time.time() if now is None else now)
        try:
            return PoaClaims.model_validate(claims)
        except ValidationError as exc:
            raise PoaRejectedError("invalid_claims", f"{exc.error_count()} claim errors") from exc

    def _check_registered(self, claims: dict[str, object], now: float) -> None:
        missing = [name for name in _REQUIRED if name not in claims]
        if missing:
            raise PoaRejectedError("invalid_token", f"missing claims: {', '.join(missing)}")
        exp, nbf, iat = (_int_claim(claims, name) for name in ("exp", "nbf", "iat"))
        if exp <= now - self._leeway:
            raise PoaRejectedError("expired", "the PoA has expired")
        if nbf > now + self._leeway:
            raise PoaRejectedError("not_yet_valid", "the PoA is not valid yet (nbf)")
        if iat > now + self._leeway:
            raise PoaRejectedError("not_yet_valid", "the PoA was issued in the future (iat)")
        aud = claims["aud"]
        if not (aud == self._audience or (isinstance(aud, list) and self._audience in aud)):
            raise PoaRejectedError("wrong_audience", "the PoA is for another audience")
        if claims["iss"] != self._issuer:
            raise PoaRejectedError("wrong_issuer", "the PoA was issued by someone else")
