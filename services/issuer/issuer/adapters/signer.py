"""Sign PoA claims as an EdDSA JWT with the key loaded once (not per token)."""

from __future__ import annotations

import jwt

from contracts import POA_TYP, PoaClaims
from issuer.adapters.keys import SigningKey

__all__ = ["PoaSigner"]


class PoaSigner:
    ALGORITHM = "EdDSA"

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    @property
    def kid(self) -> str:
        return self._key.kid

    def sign(self, claims: PoaClaims) -> str:
        return jwt.encode(
            claims.model_dump(mode="json", exclude_none=True, by_alias=True),
            self._key.private,
            algorithm=self.ALGORITHM,
            headers={"typ": POA_TYP, "kid": self._key.kid},
        )
