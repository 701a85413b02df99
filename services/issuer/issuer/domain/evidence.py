"""The issuer's own judgement of a quorum: does the evidence prove it? (docs/architecture.md §6.1)

The approvals service's word is not enough. For every counted vote the adapter
has already verified the vote's proof of origin and resolved the approver in the
directory; this module checks, purely, that those verified votes really make the
quorum the policy asks for: the policy's tier and count, the exact request digest,
distinct eligible approvers, none of them the requester or its accountable party,
all cast before the request's window closed (a member of a group the policy
escalates to counts for a vote received from the escalation point on, measured
from the request's time, with the clock-skew slack), and, when the policy asks for a
composition of groups (one manager and one compliance, say), that the verified
approvers make it, each in one group only (`contracts.quorum`, the matching
approvals assigned them with; a vote's claimed group must be the one the issuer
assigns it). Who may approve, and the counting, are `contracts.eligibility`'s,
the rules approvals counted with; the policy's answer is
`contracts.requirements.Requirements`, the shape approvals decided with.

A vote cast on someone's behalf (`VoteOnBehalf`) carries the delegate who cast it
and the grant (both proofs verified by the adapter); it is judged by
`contracts.delegation`, as approvals judged it, and one human fills one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts import QuorumReached
from contracts.delegation import Delegation, OnBehalf, PersonCount, judge_approvers
from contracts.directory import Approver
from contracts.eligibility import ApproverRules, Count, ThresholdResult
from contracts.reasons import ReasonCode
from contracts.reminders import escalation_point
from contracts.requirements import Requirements
from issuer.errors import QuorumEvidenceError

__all__ = ["DEADLINE_SLACK", "MAX_QUORUM_AGE", "VerifiedVote", "check_fresh", "check_quorum"]

MAX_QUORUM_AGE = timedelta(minutes=10)
"""A quorum older than this is stale: a PoA is for an action about to happen."""

DEADLINE_SLACK = timedelta(seconds=5)
"""Clock skew tolerated between the approvals service and the issuer."""


@dataclass(frozen=True)
class VerifiedVote:
    """One counted vote after its proof was verified and its approver resolved in the directory."""

    approver: Approver
    approves: bool
    request_id: str
    digest: str
    vote_digest: str
    received_at: datetime
    claimed_principal: str
    claimed_type: str
    claimed_vote_digest: str
    claimed_groups: tuple[str, ...] = ()
    """The groups the evidence says the directory gave the approver; empty: not stated."""
    cast_by: Approver | None = None
    """For a vote on behalf of `approver`: the delegate who cast it (its proof verified)."""
    delegation: Delegation | None = None
    """For a vote on behalf of `approver`: the grant, its delegator's proof verified."""

    @property
    def principal(self) -> str:
        return self.approver.principal


def check_quorum(
    quorum: QuorumReached,
    votes: Sequence[VerifiedVote],
    policy: Requirements,
    *,
    max_pending_seconds: int | None = None,
) -> ThresholdResult[VerifiedVote]:
    """The verified votes' threshold result; QuorumEvidenceError naming the first thing that does not hold.

    `max_pending_seconds` is approvals' cap on the pending window (the same setting, so the
    escalation point is where approvals put it); None: the policy's window.
    """
    _check_policy(quorum, policy)
    request = quorum.request
    opens = request.requested_at
    window = policy.pending_seconds if max_pending_seconds is None else min(policy.pending_seconds, max_pending_seconds)
    deadline = opens + timedelta(seconds=window)
    escalated = escalation_point(policy.reminders, opened_at=opens, deadline=deadline)
    rules = ApproverRules.of(
        policy.tier, policy.eligible_groups, (request.agent_id, request.leg.accountable_party.id)
    ).escalating(policy.reminders.escalate_to, None if escalated is None else escalated - DEADLINE_SLACK)
    closes = request.requested_at + timedelta(seconds=policy.pending_seconds) + DEADLINE_SLACK
    count: Count[VerifiedVote] = Count(policy.approvals, policy.composition)
    people = PersonCount(count)
    for vote in votes:
        _check_vote(quorum, vote)
        cast_by = _check_approver(rules.at(vote.received_at), vote, policy)
        if vote.received_at > quorum.decided_at or quorum.decided_at > closes:
            raise QuorumEvidenceError(
                ReasonCode.AFTER_DEADLINE, f"{vote.principal}'s vote or the quorum came after the window"
            )
        people.add(vote.approver, vote, approves=True, cast_by=cast_by)
    result = count.result()
    if result.refused:
        raise QuorumEvidenceError(
            ReasonCode.DUPLICATE_APPROVER, f"{result.refused[0].ballot.principal} is counted twice"
        )
    if not result.verified:
        shortfall = result.quorum.shortfalls[0]
        raise QuorumEvidenceError(
            shortfall.code,
            f"{len(result.counted)} of {policy.approvals} distinct eligible approvers"
            f" ({policy.composition.describe() or 'any eligible group'}): {result.quorum.describe()}",
        )
    for counted in result.counted:
        if counted.ballot.claimed_type != result.group_of(counted):
            raise QuorumEvidenceError(
                ReasonCode.EVIDENCE_MISMATCH,
                f"the evidence puts {counted.principal} in {counted.ballot.claimed_type!r},"
                f" the quorum's assignment is {result.group_of(counted)!r}",
            )
    return result


def _check_approver(rules: ApproverRules, vote: VerifiedVote, policy: Requirements) -> Approver | None:
    """Whether the vote's approver may approve (directly, or through a delegate); the delegate, if any."""
    if vote.cast_by is None and vote.delegation is None:
        refusal = rules.refusal(vote.approver)
        if refusal is not None:
            raise QuorumEvidenceError(refusal, _REFUSALS[refusal].format(who=vote.principal, tier=policy.tier.value))
        return None
    if vote.cast_by is None or vote.delegation is None:
        raise QuorumEvidenceError(ReasonCode.DELEGATION_INVALID, f"{vote.principal}'s on-behalf vote lacks its grant")
    judged = judge_approvers(
        rules, vote.delegation, delegate=vote.cast_by, delegator=vote.approver, at=vote.received_at
    )
    if not isinstance(judged, OnBehalf):
        raise QuorumEvidenceError(
            judged, f"{vote.cast_by.principal}'s vote on behalf of {vote.principal} does not count: {judged.value}"
        )
    return judged.delegate


_REFUSALS = {
    ReasonCode.SELF_APPROVAL: "{who} is the requester or its accountable party",
    ReasonCode.TIER_NOT_ALLOWED: "{who} may not approve tier {tier}",
    ReasonCode.NOT_ELIGIBLE: "{who} is in none of the eligible groups",
}


def check_fresh(quorum: QuorumReached, now: datetime) -> None:
    """Judged by the issuer's own clock, never by times the request or the quorum chose."""
    if quorum.decided_at > now + DEADLINE_SLACK:
        raise QuorumEvidenceError(
            ReasonCode.QUORUM_FROM_THE_FUTURE, f"quorum decided at {quorum.decided_at}, now is {now}"
        )
    if now - quorum.decided_at > MAX_QUORUM_AGE:
        raise QuorumEvidenceError(
            ReasonCode.STALE_QUORUM, f"quorum decided at {quorum.decided_at} is older than {MAX_QUORUM_AGE}"
        )


def _check_policy(quorum: QuorumReached, policy: Requirements) -> None:
    if quorum.tier is not policy.tier:
        raise QuorumEvidenceError(
            ReasonCode.TIER_MISMATCH, f"quorum says {quorum.tier.value}, the policy says {policy.tier.value}"
        )
    if quorum.required_approvals < policy.approvals:
        raise QuorumEvidenceError(ReasonCode.TOO_FEW_REQUIRED, f"policy requires {policy.approvals} approvals")
    if quorum.poa_ttl_seconds > policy.poa_ttl_seconds:
        raise QuorumEvidenceError(ReasonCode.TTL_TOO_LONG, f"policy allows a PoA of {policy.poa_ttl_seconds}s at most")


def _check_vote(quorum: QuorumReached, vote: VerifiedVote) -> None:
    """What binds the vote to this quorum; who may approve is `ApproverRules`' to say."""
    if vote.request_id != quorum.request_id or vote.digest != quorum.request_digest:
        raise QuorumEvidenceError(
            ReasonCode.VOTE_FOR_ANOTHER_REQUEST, f"{vote.principal}'s vote binds to another request"
        )
    if not vote.approves:
        raise QuorumEvidenceError(ReasonCode.VOTE_NOT_APPROVE, f"{vote.principal}'s counted vote is not an approval")
    if (vote.claimed_principal, vote.claimed_vote_digest) != (vote.principal, vote.vote_digest):
        raise QuorumEvidenceError(ReasonCode.EVIDENCE_MISMATCH, f"the evidence misdescribes {vote.principal}'s vote")
    if vote.claimed_groups and set(vote.claimed_groups) != vote.approver.groups:
        raise QuorumEvidenceError(
            ReasonCode.EVIDENCE_MISMATCH, f"the evidence gives {vote.principal} other groups than the directory"
        )
