"""The Power of Attorney (PoA) claim set, and the digest that binds it to one request.

A PoA is an Ed25519 JWT (docs/architecture.md §5.1) with header `alg: EdDSA`, `typ: poa+jwt`
and `kid` = the RFC 7638 thumbprint of the signing key. This module documents
and validates the *claims*; signing and verifying live in the issuer and broker.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.canonical import sha256_digest
from contracts.events import JsonObject, Tier
from contracts.leg import Leg

__all__ = [
    "MAX_LIFETIME_SECONDS",
    "POA_TYP",
    "Confirmation",
    "ExactAction",
    "PoaClaims",
    "digest_of",
    "request_digest",
    "x5t_s256",
]

MAX_LIFETIME_SECONDS = 300
"""Five minutes (docs/architecture.md §5.4)."""

POA_TYP = "poa+jwt"
"""The JWT `typ` header of every PoA (RFC 8725 §3.11: explicit typing)."""


def request_digest(*, action: str, resource: str, params: JsonObject, tenant: str, target_tenant: str | None) -> str:
    """`sha256:` digest of the exact action asked for; votes and the PoA bind to it."""
    return sha256_digest(
        {
            "action": action,
            "resource": resource,
            "params": params,
            "tenant": tenant,
            "target_tenant": target_tenant or tenant,
        }
    )


class ExactAction(Protocol):
    """Anything naming one exact action: a request, an action presented at the broker."""

    @property
    def action(self) -> str: ...
    @property
    def resource(self) -> str: ...
    @property
    def params(self) -> JsonObject: ...
    @property
    def tenant(self) -> str: ...
    @property
    def target_tenant(self) -> str | None: ...


def digest_of(exact: ExactAction) -> str:
    """`request_digest` of a request or an action request."""
    return request_digest(
        action=exact.action,
        resource=exact.resource,
        params=exact.params,
        tenant=exact.tenant,
        target_tenant=exact.target_tenant,
    )


def x5t_s256(der: bytes) -> str:
    """RFC 8705 §3.1 `x5t#S256`: base64url (no padding) of the SHA-256 of a certificate's DER.

    The one thumbprint function: the issuer binds `cnf` with it (through
    `atb_identity.cert_thumbprint`), the gateway and the broker compare with it.
    """
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class Confirmation(BaseModel):
    """RFC 8705 `cnf`: the PoA is usable only with this client certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    x5t_s256: Annotated[str, Field(alias="x5t#S256", pattern=r"^[A-Za-z0-9_-]{43}$")]


class PoaClaims(BaseModel):
    """Every claim of a PoA.

    - `iss`: the issuer's SPIFFE ID; `sub`: the agent's SPIFFE ID; `aud`: the broker.
    - `iat`/`nbf`/`exp`: seconds since the epoch; `exp - iat` ≤ 300 (5 min), shorter
      for high and critical as the policy says.
    - `jti`: unique id; the broker spends it exactly once.
    - `act`/`res`: the one action and resource allowed; `req_digest`: binds the PoA
      to the exact action + parameters the approvers saw.
    - `tier`: the risk tier the policy assigned.
    - `leg`: legal basis, jurisdiction, accountable party, and the approval evidence.
    - `cnf`: the agent certificate's `x5t#S256` (sender constraint).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str
    sub: Annotated[str, Field(pattern=r"^spiffe://")]
    aud: str
    iat: int
    nbf: int
    exp: int
    jti: Annotated[str, Field(min_length=16, max_length=128)]
    act: str
    res: str
    req_digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    req_id: str
    tier: Tier
    leg: Leg
    cnf: Confirmation | None = None
    ver: Literal[1] = 1

    @model_validator(mode="after")
    def _lifetime(self) -> PoaClaims:
        # docs/architecture.md §5.4: a PoA lives at most 5 minutes, and not before it was issued.
        if not self.iat <= self.nbf < self.exp:
            raise ValueError("need iat <= nbf < exp")
        if self.exp - self.iat > MAX_LIFETIME_SECONDS:
            raise ValueError(f"a PoA lives at most {MAX_LIFETIME_SECONDS} s")
        return self
