"""Count one request's votes: distinct eligible people, never strings.

`tally` looks at every ballot received for one request, in arrival order, and
returns a `TallyResult` in the python-tuf manner: the threshold, what counted,
what was refused and why, and `.verified` / `.missing`. Only eligible signers
count, so duplicates, strangers, the requester and ineligible approvers cannot
inflate it. The rules of who may approve, and the counting, are
`contracts.eligibility`'s (shared with the issuer, chat and replay), and so is
the composition of groups the policy may ask for (`contracts.quorum`: who fills
which group, as a maximum matching); the deadline and the digest are this
module's. A single eligible deny denies, whatever came before
(docs/architecture.md §2.2).

Each ballot is judged by the first rule it fails, in this order:

====================  ==========================================================
``after_deadline``    received after the deadline (by the service's clock, never
                      by a time the voter wrote)
``unknown_approver``  the proven identity is not in the directory
``self_approval``     the approver is the requester: the agent or the accountable
                      party, through any alias (docs/architecture.md §2.2)
``tier_not_allowed``  the approver may not approve this request's tier
``not_eligible``      none of the approver's groups is an eligible group
``digest_mismatch``   the vote binds to a different request digest
``reason_required``   the policy asks this tier's votes of this choice for a
                      written reason (`Requirements.justification`) and the
                      signed vote carries none (contracts.justification)
``duplicate_deny``    an eligible deny after the first one (which is `denied_by`)
``duplicate``         an approval from a principal already counted
====================  ==========================================================

A ballot whose `vote_event` is a `VoteOnBehalf` (a delegate voting in a
delegator's place) is judged by `contracts.delegation.judge_on_behalf` instead of
the eligibility rules (``delegation_invalid``, ``delegation_not_in_force`` and
the rules above, for both the delegate and the delegator), and counts as the
delegator's; one human fills one place only (`contracts.delegation.PersonCount`).

Pure: no clock reads, no signature checks. `Ballot.identity` must already be the
identity *proven* by the vote's proof (or attested by a configured attester);
this module does not verify proofs and does not build outcome events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts import VoteChoice
from contracts.delegation import OnBehalf, PersonCount, judge_on_behalf, on_behalf_of_vote
from contracts.directory import Approver, Directory
from contracts.eligibility import ApproverRules, Count, Counted, ThresholdResult
from contracts.eligibility import RefusedBallot as Refused
from contracts.justification import missing_reason
from contracts.reasons import ReasonCode
from contracts.reminders import escalation_point
from contracts.requirements import Requirements

__all__ = [
    "AFTER_DEADLINE",
    "DIGEST_MISMATCH",
    "DUPLICATE",
    "DUPLICATE_DENY",
    "NOT_ELIGIBLE",
    "REASON_REQUIRED",
    "SELF_APPROVAL",
    "TIER_NOT_ALLOWED",
    "UNKNOWN_APPROVER",
    "Ballot",
    "Counted",
    "Refused",
    "TallyResult",
    "tally",
]

AFTER_DEADLINE = ReasonCode.AFTER_DEADLINE
UNKNOWN_APPROVER = ReasonCode.UNKNOWN_APPROVER
SELF_APPROVAL = ReasonCode.SELF_APPROVAL
TIER_NOT_ALLOWED = ReasonCode.TIER_NOT_ALLOWED
NOT_ELIGIBLE = ReasonCode.NOT_ELIGIBLE
DIGEST_MISMATCH = ReasonCode.DIGEST_MISMATCH
DUPLICATE_DENY = ReasonCode.DUPLICATE_DENY
DUPLICATE = ReasonCode.DUPLICATE
REASON_REQUIRED = ReasonCode.REASON_REQUIRED


@dataclass(frozen=True)
class Ballot:
    """One received vote, reduced to what the tally needs (plus its evidence)."""

    vote_id: str
    identity: str
    """The approver identity proven by the vote's proof, or attested by a configured attester."""
    choice: VoteChoice
    digest: str
    received_at: datetime
    """When the approvals service received it; lateness is judged by this alone."""
    channel: str
    vote_event: str
    """The exact signed envelope text, kept as evidence."""


TallyResult = ThresholdResult[Ballot]
"""The tally's result: `contracts.eligibility.ThresholdResult` over ballots."""


def _late(received_at: datetime, deadline: datetime) -> bool:
    """Received after the deadline, or at a time that cannot be compared with it.

    A naive time next to an aware deadline (or the reverse) cannot be shown to be
    on time, so it fails closed rather than raising.
    """
    if (received_at.utcoffset() is None) != (deadline.utcoffset() is None):
        return True
    return received_at > deadline


def tally(
    ballots: Sequence[Ballot],
    *,
    requirements: Requirements,
    digest: str,
    requester_ids: Sequence[str],
    directory: Directory,
    deadline: datetime,
) -> TallyResult:
    """Judge every ballot in arrival order; never raises on any ballots."""
    opened_at = deadline - timedelta(seconds=requirements.pending_seconds)
    rules = ApproverRules.of(requirements.tier, requirements.eligible_groups, requester_ids).escalating(
        requirements.reminders.escalate_to,
        escalation_point(requirements.reminders, opened_at=opened_at, deadline=deadline),
    )
    count: Count[Ballot] = Count(requirements.approvals, requirements.composition)
    people = PersonCount(count)
    for ballot in ballots:
        if _late(ballot.received_at, deadline):
            count.refuse(ballot, AFTER_DEADLINE)
            continue
        judged = _judge(rules.at(ballot.received_at), ballot, directory)
        if isinstance(judged, ReasonCode):
            count.refuse(ballot, judged)
        elif ballot.digest != digest:
            count.refuse(ballot, DIGEST_MISMATCH)
        elif missing_reason(requirements.justification, ballot.choice, ballot.vote_event):
            count.refuse(ballot, REASON_REQUIRED)
        elif isinstance(judged, OnBehalf):
            approves = ballot.choice == VoteChoice.APPROVE
            people.add(judged.delegator, ballot, approves=approves, cast_by=judged.delegate)
        else:
            people.add(judged, ballot, approves=ballot.choice == VoteChoice.APPROVE)
    return count.result()


def _judge(rules: ApproverRules, ballot: Ballot, directory: Directory) -> Approver | OnBehalf | ReasonCode:
    """The approver a ballot counts for (for an on-behalf vote: the delegator, through the grant)."""
    on_behalf = on_behalf_of_vote(ballot.vote_event)
    if on_behalf is None:
        return rules.judge(ballot.identity, directory)
    vote, delegation = on_behalf
    if not directory.same_person(vote.approver_id, ballot.identity):
        return ReasonCode.DELEGATION_INVALID  # the proven voter is not the vote's delegate
    return judge_on_behalf(
        rules,
        delegation,
        delegate_id=ballot.identity,
        delegator_id=vote.on_behalf_of,
        directory=directory,
        at=ballot.received_at,
    )
