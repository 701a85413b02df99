"""Verify a PoA JWT (RFC 8725): pinned algorithm, explicit type, known key, required claims.

Two verify-or-raise policy objects (sigstore-python's identity-token checks are
the model): `verify()` returns `PoaClaims` or raises `PoaRejectedError` with a
stable code. Both start with `precheck()`, our rules that no JWT library has:
at most 16 KiB; three parts, each canonical base64url (no padding, no unused
bits set: one token, one spelling); a JSON-object header with `alg` exactly
`EdDSA`, `typ` exactly `poa+jwt`, none of `jku`, `x5u`, `jwk`, `x5c`, `crit`,
and a string `kid` naming a key we already hold (docs/architecture.md §5.1).
Nothing in the payload is read before the signature verifies. Then:

- `PoaVerifier` (production) decodes payload and signature itself, verifies the
  Ed25519 signature, and checks the registered claims and `PoaClaims`.
- `LibraryPoaVerifier` hands the token to PyJWT, the library the issuer signs
  with, naming the algorithm, audience, issuer, leeway and required claims, and
  maps every PyJWT exception to the same codes.

Why production keeps its own parser: PyJWT 2.15 checks every character of the
token against the base64url alphabet in a Python generator, which costs about
twice the Ed25519 verification itself (cProfile: 48% of a library verification,
the signature 21%). On the 2-core development machine, library verifications
reach 0.44-0.48 of raw Ed25519 verifications and ours 0.76-0.77
(`bench/broker_decisions.py`, both measured in one run). A broker decision
includes a verification, so with PyJWT decisions cannot reach issue 16's goal
of 0.55 of raw verifications; ours leaves room above it (0.38 measured so far:
OPA and the spent store take the rest). tests/unit/test_broker_verify_differential.py
runs both over the whole negative corpus, Wycheproof's Ed25519 vectors and
generated signature edge cases, and requires the same answer from each.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any, Protocol

import jwt
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from broker.adapters.keys import KeyRing
from contracts import POA_TYP, PoaClaims

__all__ = [
    "MAX_TOKEN_BYTES",
    "LibraryPoaVerifier",
    "PoaRejectedError",
    "PoaVerifier",
    "TokenVerifier",
    "precheck",
]

ALGORITHM = "EdDSA"
MAX_TOKEN_BYTES = 16 * 1024
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
_REQUIRED = ("exp", "nbf", "iat", "jti", "iss", "sub", "aud")
_TIMES = ("exp", "nbf", "iat")
_PART = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = {
    2: frozenset(c for i, c in enumerate(_ALPHABET) if i & 0b1111 == 0),
    3: frozenset(c for i, c in enumerate(_ALPHABET) if i & 0b11 == 0),
}
"""The last character of a part whose length is 2 or 3 mod 4 carries 4 or 2 unused bits: they must
be zero (RFC 4648 §3.5), else 16 (or 4) strings decode to the same bytes and anything keyed on the
token's text or hash, rather than its `jti`, could be presented twice. PyJWT refuses them too, and
accepts `=` padding, which we do not."""


class PoaRejectedError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def _canonical(part: str, what: str) -> None:
    tail = len(part) % 4
    if tail == 1 or _PART.fullmatch(part) is None:
        raise PoaRejectedError("malformed", f"{what} is not base64url")
    if tail and part[-1] not in _CANONICAL_LAST[tail]:
        raise PoaRejectedError("malformed", f"{what} is not canonical base64url (unused bits set)")


def _header(part: str) -> dict[str, Any]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise PoaRejectedError("malformed", "header is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise PoaRejectedError("malformed", "header is not a JSON object")
    return value


def precheck(token: str, keys: KeyRing) -> Ed25519PublicKey:
    """Our rules on the token's shape and header (module docstring, step 1); the key its `kid` names."""
    if len(token) > MAX_TOKEN_BYTES:
        raise PoaRejectedError("malformed", f"token longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise PoaRejectedError("malformed", "not a compact JWS (three dot-separated parts)")
    for part, what in zip(parts, ("header", "payload", "signature"), strict=True):
        _canonical(part, what)
    header = _header(parts[0])
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise PoaRejectedError("alg_not_allowed", f"alg {alg!r} is not allowed")
    if header.get("typ") != POA_TYP:
        raise PoaRejectedError("wrong_typ", f"typ must be {POA_TYP}")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise PoaRejectedError("forbidden_header", f"header {name!r} is not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise PoaRejectedError("malformed", "kid must be a string")
    key = keys.get(kid) if kid else None
    if key is None:
        raise PoaRejectedError("unknown_kid", "signing key not known")
    return key


class _PoaJWT(jwt.PyJWT):
    """PyJWT with two rules of ours on the signed payload, before PyJWT checks the claims.

    `_decode_payload` is PyJWT's documented hook for subclasses ("intended to be
    overridden"); it runs after the signature verified and before the claims
    are validated, so nothing unsigned is read here either.
    """

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        payload = super()._decode_payload(decoded)
        for name in _TIMES:
            value = payload.get(name)
            # PyJWT takes int(value): "9999999999", true and 1.5 would pass. A PoA has integers.
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise jwt.DecodeError(f"{name} must be an integer")
        aud = payload.get("aud")
        if aud is not None and not aud:
            # PyJWT calls an empty `aud` missing; it names no audience, so it is not ours.
            raise jwt.InvalidAudienceError("the PoA's audience is empty")
        return payload


def _refusal(exc: jwt.PyJWTError) -> PoaRejectedError:
    """The code of a PyJWT exception. Order matters: InvalidSignatureError is a DecodeError."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return PoaRejectedError("bad_signature", "signature does not verify")
    if isinstance(exc, jwt.InvalidAlgorithmError):  # precheck() refuses these first
        return PoaRejectedError("alg_not_allowed", str(exc))
    if isinstance(exc, jwt.ExpiredSignatureError):
        return PoaRejectedError("expired", "the PoA has expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return PoaRejectedError("not_yet_valid", f"the PoA is not valid yet: {exc}")
    if isinstance(exc, jwt.InvalidAudienceError):
        return PoaRejectedError("wrong_audience", "the PoA is for another audience")
    if isinstance(exc, jwt.InvalidIssuerError):
        return PoaRejectedError("wrong_issuer", "the PoA was issued by someone else")
    # After precheck() the parts are canonical base64url and the header a JSON object, so a
    # DecodeError is about the signed payload (not a JSON object, a time claim not an integer),
    # as are MissingRequiredClaimError, InvalidIssuedAtError, InvalidSubjectError, InvalidJTIError.
    return PoaRejectedError("invalid_token", str(exc))


class TokenVerifier(Protocol):
    """What the broker needs of a verifier (both below are one)."""

    def verify(self, token: str) -> PoaClaims: ...


def _b64(part: str) -> bytes:
    """Decode a part `precheck()` found canonical (so this cannot fail)."""
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json_object(raw: bytes, what: str) -> dict[str, object]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoaRejectedError("invalid_token", f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise PoaRejectedError("invalid_token", f"{what} is not a JSON object")
    return value


def _int_claim(claims: dict[str, object], name: str) -> int:
    value = claims[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise PoaRejectedError("invalid_token", f"{name} must be an integer")
    return value


class PoaVerifier:
    """Our parser after `precheck()` (production): `verify()` returns `PoaClaims` or raises `PoaRejectedError`.

    Order: `precheck()`, signature, then the claims (required registered claims,
    `exp`, `nbf`, `iat` with leeway, `aud`, `iss`, then the `PoaClaims` model).
    """

    ALGORITHMS = (ALGORITHM,)

    def __init__(self, keys: KeyRing, *, audience: str, issuer: str, leeway_s: int = 10) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s

    def verify(self, token: str, now: float | None = None) -> PoaClaims:
        key = precheck(token, self._keys)
        head_b64, body_b64, sig_b64 = token.split(".")
        try:
            key.verify(_b64(sig_b64), f"{head_b64}.{body_b64}".encode("ascii"))
        except (InvalidSignature, ValueError) as exc:
            raise PoaRejectedError("bad_signature", "signature does not verify") from exc
        # Signed: from here on the payload is the issuer's, but still checked.
        claims = _json_object(_b64(body_b64), "payload")
        self._check_registered(claims, time.time() if now is None else now)
        try:
            return PoaClaims.model_validate(claims)
        except ValidationError as exc:
            raise PoaRejectedError("invalid_claims", f"{exc.error_count()} claim errors") from exc

    def _check_registered(self, claims: dict[str, object], now: float) -> None:
        missing = [name for name in _REQUIRED if name not in claims]
        if missing:
            raise PoaRejectedError("invalid_token", f"missing claims: {', '.join(missing)}")
        exp, nbf, iat = (_int_claim(claims, name) for name in _TIMES)
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


class LibraryPoaVerifier:
    """PyJWT after `precheck()`: `verify()` returns `PoaClaims` or raises `PoaRejectedError`."""

    ALGORITHMS = (ALGORITHM,)

    def __init__(self, keys: KeyRing, *, audience: str, issuer: str, leeway_s: int = 10) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s
        self._jwt = _PoaJWT()

    def verify(self, token: str) -> PoaClaims:
        key = precheck(token, self._keys)
        try:
            claims = self._jwt.decode(
                token,
                key,
                algorithms=list(self.ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # Every check PyJWT has stays on (signature, exp, nbf, iat, aud, iss, and the types of
                # sub and jti); `require` adds presence.
                # NOTE: strict_aud stays off (PyJWT's default): `aud` may be a list that names us.
                options={"require": list(_REQUIRED), "strict_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from exc
        try:
            return PoaClaims.model_validate(claims)
        except ValidationError as exc:
            raise PoaRejectedError("invalid_claims", f"{exc.error_count()} claim errors") from exc
