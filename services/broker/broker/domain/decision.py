"""Decide one presentation against the claims of its (already signature-checked) PoA.

Pure: signature and expiry checks happened in the adapter; this module checks
that the PoA was issued for *this* agent (proven by mTLS or the event proof),
*this* certificate (`cnf`), *this* action and resource, and *this* exact request
(the v2 request digest: request, agent, action, parameters, tenants, the PoA's `leg`
and `cnf`). Policy (tiers, approvals) is OPA's; single use is the spent store's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from broker.domain.connectors import Connector
from contracts import ActionRequested, Decision, DigestFields, PoaClaims, Tier, digest_binds

__all__ = ["Outcome", "Presentation", "Verdict", "check_bindings"]

Channel = Literal["http", "kafka"]


@dataclass(frozen=True)
class Presentation:
    """One attempt to spend a PoA: what is asked, and who proved to be asking.

    `presentation_id` identifies the attempt itself: a redelivered Kafka record is
    the same attempt (same id), a second HTTP call is a new one.
    """

    action: ActionRequested
    agent_id: str
    cert_thumbprint: str | None
    presentation_id: str
    channel: Channel
    connector: str | None = None
    """The connector the agent named, if any (it must be the one the registry assigns)."""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reasons: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    @staticmethod
    def deny(*reasons: str) -> Verdict:
        return Verdict(Decision.DENY, reasons)


@dataclass(frozen=True)
class Outcome:
    """The decision on one presentation, with what the events and the HTTP answer need."""

    presentation: Presentation
    verdict: Verdict
    policy_version: str
    jti: str | None = None
    tier: Tier | None = None
    connector: Connector | None = None
    audit_type: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed


def check_bindings(presentation: Presentation, claims: PoaClaims) -> tuple[str, ...]:
    """Every way the PoA does not fit this presentation; empty when it fits."""
    action = presentation.action
    reasons: list[str] = []
    if claims.req_id != action.request_id:
        reasons.append("request_mismatch: PoA belongs to another request")
    if claims.sub != presentation.agent_id:
        reasons.append("sub_mismatch: PoA was issued to another agent")
    if action.agent_id != presentation.agent_id:
        reasons.append("agent_mismatch: the named agent is not the one who proved its identity")
    if claims.cnf is None:
        reasons.append("cnf_missing: PoA is not bound to a certificate")
    elif presentation.cert_thumbprint is None:
        reasons.append("cnf_unproven: no certificate was presented")
    elif claims.cnf.x5t_s256 != presentation.cert_thumbprint:
        reasons.append("cnf_mismatch: PoA is bound to another certificate")
    if claims.act != action.action:
        reasons.append("action_mismatch: PoA allows another action")
    if claims.res != action.resource:
        reasons.append("resource_mismatch: PoA allows another resource")
    at = datetime.fromtimestamp(claims.iat, UTC)  # signed by the issuer: v1 only inside the window
    if not digest_binds(DigestFields.of_presentation(action, claims), claims.req_digest, at=at):
        reasons.append("digest_mismatch: parameters differ from what was approved")
    return tuple(reasons)
