"""The Power of Attorney (PoA) claim set, and the digest that binds it to one request.

A PoA is an Ed25519 JWT (docs/architecture.md §5.1) with header `alg: EdDSA`, `typ: poa+jwt`
and `kid` = the RFC 7638 thumbprint of the signing key. This module documents
and validates the *claims*; signing and verifying live in the issuer and broker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.canonical import sha256_digest
from contracts.events import ActionRequested, IssuanceRequested, JsonObject, Tier
from contracts.leg import Leg

__all__ = [
    "CURRENT_DIGEST_VERSION",
    "DIGEST_V1_WINDOW",
    "MAX_LIFETIME_SECONDS",
    "POA_TYP",
    "Confirmation",
    "DigestFields",
    "PoaClaims",
    "V1Window",
    "digest_binds",
    "digest_of",
    "digest_version",
    "request_digest",
    "x5t_s256",
]

MAX_LIFETIME_SECONDS = 300
"""Five minutes (docs/architecture.md §5.4)."""

POA_TYP = "poa+jwt"
"""The JWT `typ` header of every PoA (RFC 8725 §3.11: explicit typing)."""


DIGEST_V1_PREFIX = "sha256:"
DIGEST_V2_PREFIX = "sha256v2:"
DIGEST_VERSIONS = {1: DIGEST_V1_PREFIX, 2: DIGEST_V2_PREFIX}
CURRENT_DIGEST_VERSION = 2
"""New digests (intake, cards, CLI votes, PoAs) are v2; v1 is only ever checked, in its window."""

DEFAULT_V1_CUTOVER = datetime(2026, 12, 5, tzinfo=UTC)
"""When v2 was released: requests asked later never get v1 (override: `ATB_DIGEST_V1_CUTOVER`)."""

DEFAULT_V1_GRACE = timedelta(days=1, minutes=20)
"""How long after the cut-over a request asked before it can still be in flight: the longest
pending window (approvals' `max_pending_seconds`, 1 day), the issuer's quorum age (10 min), a
PoA's lifetime (5 min) and leeway. Override: `ATB_DIGEST_V1_GRACE_SECONDS`."""


@dataclass(frozen=True)
class V1Window:
    """When a v1 (`sha256:`) request digest is still accepted.

    The downgrade rule: v1 is accepted only for a request asked *before* the cut-over, and
    only until the cut-over plus the grace, by the checking service's own clock (or a time
    it already trusts: the ballot's receipt, the quorum's decision, the PoA's `iat`). The
    version is not chosen by the request: a request carries no version field that an
    attacker could omit. `requested_at` is the agent's word, so a backdated request is
    the one way to ask for v1 inside the window; after `cutover + grace` no digest of
    version 1 verifies anywhere, whatever the request says.
    """

    cutover: datetime = DEFAULT_V1_CUTOVER
    grace: timedelta = DEFAULT_V1_GRACE

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> V1Window:
        cutover = environ.get("ATB_DIGEST_V1_CUTOVER")
        grace = environ.get("ATB_DIGEST_V1_GRACE_SECONDS")
        at = datetime.fromisoformat(cutover) if cutover else DEFAULT_V1_CUTOVER
        if at.utcoffset() is None:
            raise ValueError("ATB_DIGEST_V1_CUTOVER needs a UTC offset")
        return cls(at, timedelta(seconds=int(grace)) if grace else DEFAULT_V1_GRACE)

    def allows(self, *, requested_at: datetime | None, at: datetime | None) -> bool:
        """Whether v1 may bind a request asked at `requested_at`, checked at `at` (None: unknown)."""
        if requested_at is None and at is None:
            return False
        if requested_at is not None and not requested_at < self.cutover:
            return False
        return at is None or at < self.cutover + self.grace


DIGEST_V1_WINDOW = V1Window.from_env(os.environ)
"""The window every service checks v1 digests against (read once from the environment)."""


@dataclass(frozen=True)
class DigestFields:
    """Everything a request digest covers: what an approver is shown and what the PoA carries.

    v2 covers, as canonical JSON: `request_id`, `agent_id` (the PoA's `sub`), `tenant`,
    `target_tenant` (defaults to the tenant), `action` (`act`), `resource` (`res`), `params`,
    `leg` in full as the request names it (basis, ref, description or data subject and
    purpose, jurisdiction, accountable party type and id, `ticket_ref`), without the
    approval evidence (`approval`, `dual_control`) the issuer adds from the votes, which
    a request may not carry (approvals refuses it at intake); and `cnf` (the agent
    certificate's `x5t#S256`, the PoA's `cnf`; null if none). Not covered: `requested_at`
    and `callback_url` (neither shown to approvers nor carried in the PoA; the callback only says
    where the outcome is delivered, and the gateway's signature on the request protects it) and
    what the policy decides (tier, approvals, deadline, TTL). Adding the callback left v2 as it was:
    a request without one and the same request with one have the same digest.

    v1 covered only `action`, `resource`, `params`, `tenant`, `target_tenant`.
    """

    request_id: str
    agent_id: str
    tenant: str
    target_tenant: str | None
    action: str
    resource: str
    params: JsonObject
    leg: Leg
    cnf: str | None

    @classmethod
    def of_request(cls, request: IssuanceRequested) -> DigestFields:
        return cls(
            request_id=request.request_id,
            agent_id=request.agent_id,
            tenant=request.tenant,
            target_tenant=request.target_tenant,
            action=request.action,
            resource=request.resource,
            params=request.params,
            leg=request.leg,
            cnf=request.agent_cert_thumbprint,
        )

    @classmethod
    def of_presentation(cls, action: ActionRequested, claims: PoaClaims) -> DigestFields:
        """The presented action, with what only the PoA carries (the `leg`, the `cnf`)."""
        return cls(
            request_id=action.request_id,
            agent_id=action.agent_id,
            tenant=action.tenant,
            target_tenant=action.target_tenant,
            action=action.action,
            resource=action.resource,
            params=action.params,
            leg=claims.leg,
            cnf=claims.cnf.x5t_s256 if claims.cnf is not None else None,
        )


def request_digest(fields: DigestFields, version: int = CURRENT_DIGEST_VERSION) -> str:
    """The one request digest: `sha256v2:` (v2) or `sha256:` (v1) + hex SHA-256 of canonical JSON."""
    tenants = {"tenant": fields.tenant, "target_tenant": fields.target_tenant or fields.tenant}
    exact = {"action": fields.action, "resource": fields.resource, "params": fields.params, **tenants}
    if version == 1:
        return sha256_digest(exact)
    if version != 2:
        raise ValueError(f"unknown request digest version {version}")
    leg = fields.leg.model_dump(mode="json", exclude={"approval", "dual_control"})
    covered = {"v": 2, "request_id": fields.request_id, "agent_id": fields.agent_id, **exact, "leg": leg}
    return DIGEST_V2_PREFIX + sha256_digest({**covered, "cnf": fields.cnf}).removeprefix(DIGEST_V1_PREFIX)


def digest_of(request: IssuanceRequested) -> str:
    """The current (v2) digest of a request: what new cards, votes and PoAs bind to."""
    return request_digest(DigestFields.of_request(request))


def digest_version(digest: str) -> int | None:
    """The version a digest names by its prefix, or None for no known version."""
    for version, prefix in sorted(DIGEST_VERSIONS.items(), reverse=True):
        if digest.startswith(prefix):
            return version
    return None


def digest_binds(
    fields: DigestFields | IssuanceRequested,
    digest: str,
    *,
    requested_at: datetime | None = None,
    at: datetime | None,
    window: V1Window | None = None,
) -> bool:
    """Whether `digest` is this request's digest in the version it names (v1: only inside the window).

    The one comparison: approvals' tally, the issuer's re-check, chat's card and the
    broker's binding check all use it. `requested_at` defaults to the request's own.
    """
    if isinstance(fields, IssuanceRequested):
        requested_at = requested_at or fields.requested_at
        fields = DigestFields.of_request(fields)
    version = digest_version(digest)
    if version is None:
        return False
    if version == 1 and not (window or DIGEST_V1_WINDOW).allows(requested_at=requested_at, at=at):
        return False
    return hmac.compare_digest(request_digest(fields, version), digest)


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
      to the exact request the approvers saw (`DigestFields`, v2 `sha256v2:`).
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
    req_digest: Annotated[str, Field(pattern=r"^sha256(v2)?:[0-9a-f]{64}$")]
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
