"""What the console knows about one request, whom it shows it to, and whether a vote may be published.

`evolve(view, event) -> view` folds the approvals service's outcomes
(ApprovalRequired, QuorumReached, RequestDenied, RequestExpired), its reminders
and escalation (ReminderDue, ApprovalEscalated: the inbox's "reminded" and
"escalated to" badges), its changelog (ApprovalStateChanged: the request and the
ballots so far) and PoaIssued into one view per request. The request's details are shown only when they hash to the
digest votes bind to (`ApprovalView.verified_request`).

`eligible` and `decide_vote` judge the signed-in approver under the one
eligibility rule (`contracts.eligibility.ApproverRules`), in force at the time
asked: once approvals escalated the request (a signed ApprovalEscalated), its
`escalate_to` groups are eligible from `escalated_at` on
(`ApproverRules.escalating(...).at(now)`), so an escalated member sees it in the
inbox from that point. Then the console's own rules, each with a stable code:

==================== ==========================================================
``unknown_request``  the console knows no ApprovalRequired for this request
``closed``           the request already has an outcome
``late``             its deadline has passed
``self_approval``,   the eligibility rules (contracts/eligibility.py)
``tier_not_allowed``,
``not_eligible``
``duplicate``        this approver already voted on it through the console
``reason_required``  a deny needs a reason
``step_up_required`` an approval on a step-up tier needs a passkey assertion
==================== ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from contracts import (
    ApprovalRequired,
    ApprovalStateChanged,
    BallotRecord,
    EventPayload,
    IssuanceRequested,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Tier,
    VoteChoice,
    digest_binds,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.delegation import Delegation, judge_approvers
from contracts.directory import Approver
from contracts.eligibility import ApproverRules
from contracts.reasons import ReasonCode

__all__ = [
    "ApprovalView",
    "Closure",
    "VoteDecision",
    "VoteRefused",
    "decide_vote",
    "eligible",
    "evolve",
    "explain",
    "request_id_of",
]


@dataclass(frozen=True)
class Closure:
    kind: Literal["approved", "issued", "denied", "expired"]
    detail: str
    approvers: tuple[str, ...] = ()
    at: datetime | None = None
    poa_jti: str | None = None


@dataclass(frozen=True)
class ApprovalView:
    request_id: str
    required: ApprovalRequired | None = None
    request: IssuanceRequested | None = None
    ballots: tuple[BallotRecord, ...] = ()
    resolution: Closure | None = None
    reminder: ReminderDue | None = None
    """The latest reminder approvals sent (`reminder` of `of`)."""
    escalation: ApprovalEscalated | None = None
    """The escalation, once approvals sent it: `escalate_to` are eligible from `escalated_at` on."""

    @property
    def verified_request(self) -> IssuanceRequested | None:
        """The request's details, only if they hash to the digest votes bind to."""
        if self.request is None or self.required is None:
            return None
        return self.request if digest_binds(self.request, self.required.request_digest, at=None) else None

    def open_at(self, now: datetime) -> bool:
        return self.required is not None and self.resolution is None and self.required.deadline > now

    def rules(self, at: datetime) -> ApproverRules | None:
        """The eligibility rules in force at `at` (the escalation groups join from the escalation on)."""
        required = self.required
        if required is None:
            return None
        rules = ApproverRules.of(
            required.tier, required.eligible_groups, (required.agent_id, required.accountable_party_id)
        )
        escalation = self.escalation
        if escalation is None:
            return rules
        return rules.escalating(escalation.escalate_to, escalation.escalated_at).at(at)


_Followed = (
    ApprovalRequired
    | ApprovalStateChanged
    | QuorumReached
    | RequestDenied
    | RequestExpired
    | PoaIssued
    | ReminderDue
    | ApprovalEscalated
)


def request_id_of(event: EventPayload) -> str | None:
    return event.request_id if isinstance(event, _Followed) else None


def evolve(view: ApprovalView | None, event: EventPayload) -> ApprovalView | None:
    """The view after `event`; events the console does not follow change nothing."""
    if not isinstance(event, _Followed):
        return view
    current = view or ApprovalView(request_id=event.request_id)
    match event:
        case ApprovalRequired():
            return replace(current, required=event)
        case ApprovalStateChanged():
            return replace(current, request=event.request or current.request, ballots=event.ballots)
        case QuorumReached():
            approvers = tuple(v.approver_id for v in event.votes)
            if current.resolution is not None and current.resolution.kind == "issued":
                return current
            resolution = Closure("approved", "quorum reached", approvers, event.decided_at)
            return replace(current, request=current.request or event.request, resolution=resolution)
        case RequestDenied():
            detail = f"{event.code}: {event.reason} (by {event.denied_by})"
            return replace(current, resolution=Closure("denied", detail, (), event.decided_at))
        case RequestExpired():
            detail = f"{event.approvals_counted} of {event.required_approvals} approvals before the deadline"
            return replace(current, resolution=Closure("expired", detail, (), event.deadline))
        case ReminderDue():
            if current.reminder is not None and current.reminder.reminder >= event.reminder:
                return current  # a replay or an older one
            return replace(current, reminder=event)
        case ApprovalEscalated():
            return current if current.escalation is not None else replace(current, escalation=event)
        case PoaIssued():
            approvers = current.resolution.approvers if current.resolution else ()
            detail = f"PoA {event.jti} valid until {event.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            return replace(current, resolution=Closure("issued", detail, approvers, event.issued_at, event.jti))
    return current  # pragma: no cover - the match is exhaustive over _Followed


def eligible(view: ApprovalView, approver: Approver, now: datetime) -> bool:
    """Whether `approver` may approve this request now (the one eligibility rule, escalation included)."""
    rules = view.rules(now)
    return rules is not None and rules.refusal(approver) is None


@dataclass(frozen=True)
class VoteDecision:
    """Publish this vote: the approver's principal, the decision and the digest it binds to."""

    request_id: str
    principal: str
    choice: VoteChoice
    request_digest: str
    tier: Tier
    step_up: bool
    """Whether the vote must carry a passkey assertion (checked by the caller, with crypto)."""


@dataclass(frozen=True)
class VoteRefused:
    code: str
    principal: str


def _not_open(view: ApprovalView | None, principal: str, now: datetime) -> VoteRefused | None:
    """Why no vote is taken on the request now (unknown here, closed, past its deadline), or None."""
    if view is None or view.required is None:
        return VoteRefused("unknown_request", principal)
    if view.resolution is not None:
        return VoteRefused("closed", principal)
    if view.required.deadline <= now:
        return VoteRefused("late", principal)
    return None


def decide_vote(
    view: ApprovalView | None,
    approver: Approver,
    choice: VoteChoice,
    *,
    reason: str,
    already_voted: bool,
    now: datetime,
    step_up_tiers: frozenset[Tier],
    has_assertion: bool,
) -> VoteDecision | VoteRefused:
    """Whether the signed-in approver's vote may be published, by the first rule that fails."""
    principal = approver.principal
    if (shut := _not_open(view, principal, now)) is not None or view is None or view.required is None:
        return shut or VoteRefused("unknown_request", principal)
    rules = view.rules(now)
    assert rules is not None
    refusal = rules.refusal(approver)
    if refusal is not None:
        return VoteRefused(refusal.value, principal)
    if already_voted:
        return VoteRefused("duplicate", principal)
    if choice is VoteChoice.DENY and not reason.strip():
        return VoteRefused("reason_required", principal)
    step_up = choice is VoteChoice.APPROVE and view.required.tier in step_up_tiers
    if step_up and not has_assertion:
        return VoteRefused("step_up_required", principal)
    return VoteDecision(view.request_id, principal, choice, view.required.request_digest, view.required.tier, step_up)


def decide_on_behalf(
    view: ApprovalView | None,
    delegate: Approver,
    delegator: Approver,
    delegation: Delegation,
    *,
    already_voted: bool,
    now: datetime,
    has_assertion: bool,
) -> VoteDecision | VoteRefused:
    """Whether the signed-in delegate's approval in `delegator`'s place may be published, by the first rule
    that fails: the request's state, then `contracts.delegation`'s rule (window and tiers, both eligible, neither
    the requester), one place per person, and always the delegate's passkey (approvals and the issuer accept an
    on-behalf vote from the console only with it)."""
    principal = delegate.principal
    if (shut := _not_open(view, principal, now)) is not None or view is None or view.required is None:
        return shut or VoteRefused("unknown_request", principal)
    rules = view.rules(now)
    assert rules is not None
    judged = judge_approvers(rules, delegation, delegate=delegate, delegator=delegator, at=now)
    if isinstance(judged, ReasonCode):
        return VoteRefused(judged.value, principal)
    if already_voted:
        return VoteRefused("duplicate", principal)
    if not has_assertion:
        return VoteRefused("step_up_required", principal)
    return VoteDecision(
        view.request_id, delegator.principal, VoteChoice.APPROVE, view.required.request_digest, view.required.tier, True
    )


_EXPLAIN = {
    "unknown_request": "This request is not waiting for approval here.",
    "closed": "This request is already closed: no more votes are taken.",
    "late": "The deadline of this request has passed: the vote is too late.",
    "self_approval": "You requested this action (as the agent or its accountable party): you cannot approve it.",
    "tier_not_allowed": "You may not approve requests of this risk tier.",
    "not_eligible": "None of your groups may approve this request.",
    "unknown_approver": "You are not in the approver directory.",
    "duplicate": "You already voted on this request (or for this person).",
    "delegation_not_in_force": "The delegation does not cover this request now (its window or its tiers).",
    "delegation_invalid": "The delegation does not allow this vote.",
    "reason_required": "A deny needs a reason.",
    "step_up_required": "Approving this request needs your passkey: confirm with your device.",
    "assertion_invalid": "Your passkey's confirmation could not be verified: the vote was not recorded.",
    "publish_failed": "The vote could not be recorded: try again.",
}


RESULT_CODES = frozenset({*_EXPLAIN, "vote_cast"})
"""Every outcome of a vote the request page can report."""


def explain(code: str) -> str:
    """A sentence for the approver."""
    return _EXPLAIN.get(code, f"The vote was refused ({code}).")
