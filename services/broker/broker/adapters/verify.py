"""Verify a PoA JWT (RFC 8725): pinned algorithm, explicit type, known key, required claims.

Returns the validated claims or raises PoaRejectedError with a stable code.
`kid` and every header are untrusted input: they only select among keys we
already hold; `jku`, `x5u` and `jwk` headers are refused outright.
"""

from __future__ import annotations

import jwt
from pydantic import ValidationError

from broker.adapters.keys import KeyRing
from contracts import POA_TYP, PoaClaims

__all__ = ["PoaRejectedError", "PoaVerifier"]

_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")


class PoaRejectedError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class PoaVerifier:
    ALGORITHMS = ("EdDSA",)

    def __init__(self, keys: KeyRing, *, audience: str, issuer: str, leeway_s: int = 10) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s

    def verify(self, token: str) -> PoaClaims:
        try:
            unverified_header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise PoaRejectedError("malformed", str(exc)) from exc
        if unverified_header.get("alg") not in self.ALGORITHMS:
            raise PoaRejectedError("alg_not_allowed", f"alg {unverified_header.get('alg')!r} is not allowed")
        if unverified_header.get("typ") != POA_TYP:
            raise PoaRejectedError("wrong_typ", f"typ must be {POA_TYP}")
        for name in _FORBIDDEN_HEADERS:
            if name in unverified_header:
                raise PoaRejectedError("forbidden_header", f"header {name!r} is not accepted")
        kid = unverified_header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise PoaRejectedError("unknown_kid", "signing key not known")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "nbf", "iat", "jti", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise PoaRejectedError("expired", str(exc)) from exc
        except jwt.ImmatureSignatureError as exc:
            raise PoaRejectedError("not_yet_valid", str(exc)) from exc
        except jwt.InvalidAudienceError as exc:
            raise PoaRejectedError("wrong_audience", str(exc)) from exc
        except jwt.InvalidIssuerError as exc:
            raise PoaRejectedError("wrong_issuer", str(exc)) from exc
        except jwt.InvalidSignatureError as exc:
            raise PoaRejectedError("bad_signature", str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise PoaRejectedError("invalid_token", str(exc)) from exc
        try:
            return PoaClaims.model_validate(claims)
        except ValidationError as exc:
            raise PoaRejectedError("invalid_claims", f"{exc.error_count()} claim errors") from exc
