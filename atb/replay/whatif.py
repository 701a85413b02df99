"""What a candidate policy would have decided differently: pure comparisons of frozen values.

Two kinds of history are compared (docs/architecture.md §2.3, the "what-if" of a policy PR):

* a request's requirements (tier, approvals, ticket, composition of groups) as
  recorded when it arrived, against the candidate's `requirements`; and a
  recorded quorum (its counted approvers with the groups approvals resolved)
  against the candidate's composition, by `contracts.quorum.assign`, the rule
  approvals and the issuer judge with;
* a broker decision as recorded, against the candidate's `decisions` for the
  same input. A recorded deny is comparable only when the policy made it: a
  replayed PoA, a bad signature or a revoked token are denied before the policy
  is asked, whatever it says, so they are listed as not re-evaluated.

Reasons are data (`contracts.reasons.Reason`): what the policy denied is told by
the reason codes, and the action's tier by the decision's `action_tier`; no
wording is read.

No I/O here; `policy.py` gathers the history and asks OPA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from contracts import Decision
from contracts.quorum import Composition, Member, assign
from contracts.reasons import Reason, ReasonCode

__all__ = [
    "POLICY_DENY_CODES",
    "Change",
    "Evaluated",
    "RecordedDecision",
    "Requirement",
    "Skipped",
    "WhatIfReport",
    "compare_decision",
    "compare_requirement",
    "is_policy_deny",
    "recorded_action_tier",
]

POLICY_DENY_CODES: frozenset[ReasonCode] = frozenset(
    {
        ReasonCode.POA_REQUIRED,
        ReasonCode.TIER_TOO_LOW,
        ReasonCode.APPROVAL_MISSING,
        ReasonCode.SELF_APPROVAL,
        ReasonCode.DUAL_CONTROL_MISSING,
        ReasonCode.DUAL_CONTROL_NOT_DISTINCT,
        ReasonCode.TICKET_MISSING,
        ReasonCode.PRINCIPALS_MISSING,
        ReasonCode.COMPOSITION_NOT_MET,
        ReasonCode.APPROVER_GROUP_MISMATCH,
    }
)
"""The codes opa/policy/poa.rego denies with (tests/unit/test_policy_reason_codes.py reads them from
the policy); a deny with any other code happened before the policy was asked."""

ChangeKind = Literal["would_deny", "would_allow", "tier_change", "requirements_change"]


def recorded_action_tier(action_tier: str | None, reasons: Sequence[Reason], poa_tier: str | None) -> str | None:
    """The tier the policy gave the action when it decided, or None when unknown.

    A v2 decision records it (`action_tier`). A v1 decision did not: the PoA's tier
    stands in (issued by the same policy for the same action), except after a
    `tier_too_low` deny, which says the two differed.
    """
    if action_tier is not None:
        return action_tier
    if any(r.code is ReasonCode.TIER_TOO_LOW for r in reasons):
        return None
    return poa_tier


def is_policy_deny(reasons: Sequence[Reason]) -> bool:
    return bool(reasons) and all(r.code in POLICY_DENY_CODES for r in reasons)


@dataclass(frozen=True)
class Requirement:
    """What a request needs; a field the history did not record is None and not compared."""

    tier: str
    approvals: int | None = None
    ticket_required: bool | None = None
    composition: Composition | None = None
    approvers: tuple[Member, ...] | None = None
    """The recorded quorum's counted approvers and their groups; None when no quorum (with groups) was recorded."""

    def describe(self) -> str:
        parts = [self.tier]
        if self.approvals is not None:
            parts.append(f"{self.approvals} approval{'s' if self.approvals != 1 else ''}")
        if self.composition is not None and not self.composition.empty:
            parts.append(self.composition.describe())
        if self.ticket_required:
            parts.append("ticket")
        return ", ".join(parts)


@dataclass(frozen=True)
class RecordedDecision:
    request_id: str
    action_id: str
    action: str
    decision: Decision
    reasons: tuple[Reason, ...]
    tier: str | None
    """The action's tier when it was decided (see `recorded_action_tier`); None when unknown."""


@dataclass(frozen=True)
class Evaluated:
    """The candidate policy's answer to one broker input."""

    allow: bool
    reasons: tuple[Reason, ...]
    tier: str
    policy_version: str


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    subject: Literal["request", "decision"]
    request_id: str
    action: str
    recorded: str
    candidate: str
    action_id: str | None = None
    tier_before: str | None = None
    tier_after: str | None = None
    reasons: tuple[Reason, ...] = ()
    """The candidate's deny reasons (would_deny), or the recorded ones it no longer gives (would_allow)."""


@dataclass(frozen=True)
class Skipped:
    subject: Literal["request", "decision"]
    request_id: str
    action: str
    why: str
    action_id: str | None = None


@dataclass(frozen=True)
class WhatIfReport:
    requests: int
    decisions: int
    changes: tuple[Change, ...]
    skipped: tuple[Skipped, ...]
    candidate_version: str

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def compare_requirement(request_id: str, action: str, recorded: Requirement, candidate: Requirement) -> Change | None:
    """A tier change, else a change of approvals, ticket or composition where both are known, else None.

    A recorded quorum that the candidate's count and composition would not accept is a
    requirements change too, with what it lacks.
    """
    short = _quorum_short(recorded, candidate)
    if recorded.tier != candidate.tier:
        kind: ChangeKind = "tier_change"
    elif (
        (recorded.approvals is not None and recorded.approvals != candidate.approvals)
        or (recorded.ticket_required is not None and recorded.ticket_required != candidate.ticket_required)
        or (recorded.composition is not None and recorded.composition != candidate.composition)
        or short
    ):
        kind = "requirements_change"
    else:
        return None
    return Change(
        kind,
        "request",
        request_id,
        action,
        recorded=recorded.describe(),
        candidate=candidate.describe() + (f"; the recorded quorum lacks {short}" if short else ""),
        tier_before=recorded.tier,
        tier_after=candidate.tier,
    )


def _quorum_short(recorded: Requirement, candidate: Requirement) -> str:
    """What the recorded quorum lacks under the candidate's count and composition; "" when it makes it or is unknown."""
    if recorded.approvers is None or candidate.approvals is None:
        return ""
    result = assign(candidate.approvals, candidate.composition or Composition(), recorded.approvers)
    return "" if result.satisfied else result.describe()


def compare_decision(recorded: RecordedDecision, candidate: Evaluated) -> Change | Skipped | None:
    """A flip (allow ↔ deny), else a tier change of the action, else None; non-policy denies are Skipped."""
    did_allow = recorded.decision is Decision.ALLOW
    if not did_allow and not is_policy_deny(recorded.reasons):
        codes = ", ".join(r.code.value for r in recorded.reasons) or "no reason recorded"
        why = f"denied before the policy was asked ({codes})"
        return Skipped("decision", recorded.request_id, recorded.action, why, recorded.action_id)
    reasons: tuple[Reason, ...]
    if did_allow and not candidate.allow:
        kind: ChangeKind = "would_deny"
        reasons = candidate.reasons
    elif not did_allow and candidate.allow:
        kind, reasons = "would_allow", recorded.reasons
    elif recorded.tier is not None and recorded.tier != candidate.tier:
        kind, reasons = "tier_change", ()
    else:
        return None
    return Change(
        kind,
        "decision",
        recorded.request_id,
        recorded.action,
        recorded=recorded.decision.value,
        candidate="allow" if candidate.allow else "deny",
        action_id=recorded.action_id,
        tier_before=recorded.tier,
        tier_after=candidate.tier,
        reasons=reasons,
    )
