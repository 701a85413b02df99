"""The broker's pure decision rules: the verdicts `Authorizer` (broker/service.py) hands out.

Pure: signature and expiry checks happened in the adapter. `check_bindings`
checks that the PoA was issued for *this* agent (proven by mTLS or the event
proof), *this* certificate (`cnf`), *this* action and resource, and *this* exact
request (the v2 request digest: request, agent, action, parameters, tenants, the
PoA's `leg` and `cnf`). `policy_verdict` turns the policy's answer into a
verdict, or lets the presentation go on to the spent store; `ALLOWED` is the
verdict of a presentation that spent its PoA. Policy (tiers, approvals) is
OPA's; single use is the spent store's.

Every reason is a `contracts.reasons.Reason` (a code and a detail): the
published `BrokerDecision`, the HTTP answer, the audit event and the metrics
take the code from the value, never from text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from broker.domain.connectors import Connector
from contracts import ActionRequested, Decision, DigestFields, PoaClaims, Tier, digest_binds
from contracts.reasons import Reason, ReasonCode

__all__ = ["ALLOWED", "Outcome", "PolicyDecision", "Presentation", "Verdict", "check_bindings", "policy_verdict"]

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
    reasons: tuple[Reason, ...]

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(r.code for r in self.reasons)

    @staticmethod
    def deny(*reasons: Reason) -> Verdict:
        return Verdict(Decision.DENY, reasons)


ALLOWED = Verdict(Decision.ALLOW, (Reason(ReasonCode.POA_VALID),))
"""A PoA that verified, fits, is not revoked, satisfied the policy and was spent by this presentation."""

UNMANDATED = Verdict(
    Decision.ALLOW, (Reason(ReasonCode.UNMANDATED_LOW_RISK, "allowlisted, ALLOW_UNMANDATED_LOW_RISK=true"),)
)
"""No PoA, and the policy let the action through (allowlisted low risk with the switch on)."""


@dataclass(frozen=True)
class PolicyDecision:
    """The policy's answer for one presentation (`data.atb.poa.decisions`, opa/policy/poa.rego).

    `tier` is the tier the policy gives the action now; `reasons` are its deny
    reasons, codes from `ReasonCode`: at least one on deny, none on allow (the
    policy adapter refuses any other answer).
    """

    allow: bool
    reasons: tuple[Reason, ...]
    tier: Tier
    policy_version: str


@dataclass(frozen=True)
class Outcome:
    """The decision on one presentation, with what the events and the HTTP answer need."""

    presentation: Presentation
    verdict: Verdict
    policy_version: str
    jti: str | None = None
    tier: Tier | None = None
    """The PoA's tier, or the action's when the policy denied it (the audit event's `tier`)."""
    connector: Connector | None = None
    audit_type: str = ""
    action_tier: Tier | None = None
    """The tier the policy gave the action (None when it was not asked): `BrokerDecision.action_tier`."""

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed


def check_bindings(presentation: Presentation, claims: PoaClaims) -> tuple[Reason, ...]:
    """Every way the PoA does not fit this presentation; empty when it fits."""
    action = presentation.action
    reasons: list[Reason] = []
    if claims.req_id != action.request_id:
        reasons.append(Reason(ReasonCode.REQUEST_MISMATCH, "PoA belongs to another request"))
    if claims.sub != presentation.agent_id:
        reasons.append(Reason(ReasonCode.SUB_MISMATCH, "PoA was issued to another agent"))
    if action.agent_id != presentation.agent_id:
        reasons.append(Reason(ReasonCode.AGENT_MISMATCH, "the named agent is not the one who proved its identity"))
    if claims.cnf is None:
        reasons.append(Reason(ReasonCode.CNF_MISSING, "PoA is not bound to a certificate"))
    elif presentation.cert_thumbprint is None:
        reasons.append(Reason(ReasonCode.CNF_UNPROVEN, "no certificate was presented"))
    elif claims.cnf.x5t_s256 != presentation.cert_thumbprint:
        reasons.append(Reason(ReasonCode.CNF_MISMATCH, "PoA is bound to another certificate"))
    if claims.act != action.action:
        reasons.append(Reason(ReasonCode.ACTION_MISMATCH, "PoA allows another action"))
    if claims.res != action.resource:
        reasons.append(Reason(ReasonCode.RESOURCE_MISMATCH, "PoA allows another resource"))
    at = datetime.fromtimestamp(claims.iat, UTC)  # signed by the issuer: v1 only inside the window
    if not digest_binds(DigestFields.of_presentation(action, claims), claims.req_digest, at=at):
        reasons.append(Reason(ReasonCode.DIGEST_MISMATCH, "parameters differ from what was approved"))
    return tuple(reasons)


def policy_verdict(answer: PolicyDecision, *, with_poa: bool) -> Verdict | None:
    """What the policy's answer settles for a presentation that passed every local check.

    A deny is final, with the policy's reasons. An allow without a PoA is final
    too: only the unmandated low-risk path allows that. An allow with a PoA
    settles nothing yet (None): the PoA must still be spent (`ALLOWED` if this
    presentation spends it).
    """
    if not answer.allow:
        return Verdict.deny(*answer.reasons)
    if not with_poa:
        return UNMANDATED
    return None
