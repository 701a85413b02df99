"""The issuer's own judgement of a quorum: does the evidence prove it? (docs/architecture.md §6.1)

The approvals service's word is not enough. For every counted vote the adapter
has already verified the vote's proof of origin and resolved the approver in the
directory; this module checks, purely, that those verified votes really make the
quorum the policy asks for: the policy's tier and count, the exact request digest,
distinct eligible approvers, none of them the requester or its accountable party,
all cast before the request's window closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts import QuorumReached, Tier
from issuer.domain.claims import EvidenceError

__all__ = ["DEADLINE_SLACK", "MAX_QUORUM_AGE", "PolicyFacts", "VerifiedVote", "check_fresh", "check_quorum"]

MAX_QUORUM_AGE = timedelta(minutes=10)
"""A quorum older than this is stale: a PoA is for an action about to happen."""

DEADLINE_SLACK = timedelta(seconds=5)
"""Clock skew tolerated between the approvals service and the issuer."""


@dataclass(frozen=True)
class PolicyFacts:
    """What the policy says the request needs (asked by the issuer itself)."""

    tier: Tier
    approvals: int
    eligible_groups: tuple[str, ...]
    pending_seconds: int
    poa_ttl_seconds: int


@dataclass(frozen=True)
class VerifiedVote:
    """One counted vote after its proof was verified and its approver resolved."""

    principal: str
    approver_type: str
    groups: frozenset[str]
    tiers: frozenset[Tier]
    is_requester: bool
    approves: bool
    request_id: str
    digest: str
    vote_digest: str
    received_at: datetime
    claimed_principal: str
    claimed_type: str
    claimed_vote_digest: str


def check_quorum(quorum: QuorumReached, votes: Sequence[VerifiedVote], policy: PolicyFacts) -> None:
    """Raise EvidenceError naming the first thing that does not hold."""
    _check_policy(quorum, policy)
    principals: set[str] = set()
    closes = quorum.request.requested_at + timedelta(seconds=policy.pending_seconds) + DEADLINE_SLACK
    for vote in votes:
        _check_vote(quorum, vote, policy, closes)
        if vote.principal in principals:
            raise EvidenceError("duplicate_approver", f"{vote.principal} is counted twice")
        principals.add(vote.principal)
    if len(principals) < policy.approvals:
        raise EvidenceError("quorum_short", f"{len(principals)} of {policy.approvals} distinct eligible approvers")


def check_fresh(quorum: QuorumReached, now: datetime) -> None:
    """Judged by the issuer's own clock, never by times the request or the quorum chose."""
    if quorum.decided_at > now + DEADLINE_SLACK:
        raise EvidenceError("quorum_from_the_future", f"quorum decided at {quorum.decided_at}, now is {now}")
    if now - quorum.decided_at > MAX_QUORUM_AGE:
        raise EvidenceError("stale_quorum", f"quorum decided at {quorum.decided_at} is older than {MAX_QUORUM_AGE}")


def _check_policy(quorum: QuorumReached, policy: PolicyFacts) -> None:
    if quorum.tier is not policy.tier:
        raise EvidenceError("tier_mismatch", f"quorum says {quorum.tier.value}, the policy says {policy.tier.value}")
    if quorum.required_approvals < policy.approvals:
        raise EvidenceError("too_few_required", f"policy requires {policy.approvals} approvals")
    if quorum.poa_ttl_seconds > policy.poa_ttl_seconds:
        raise EvidenceError("ttl_too_long", f"policy allows a PoA of {policy.poa_ttl_seconds}s at most")


def _check_vote(quorum: QuorumReached, vote: VerifiedVote, policy: PolicyFacts, closes: datetime) -> None:
    if vote.request_id != quorum.request_id or vote.digest != quorum.request_digest:
        raise EvidenceError("vote_for_another_request", f"{vote.principal}'s vote binds to another request")
    if not vote.approves:
        raise EvidenceError("vote_not_approve", f"{vote.principal}'s counted vote is not an approval")
    if (vote.claimed_principal, vote.claimed_type, vote.claimed_vote_digest) != (
        vote.principal,
        vote.approver_type,
        vote.vote_digest,
    ):
        raise EvidenceError("evidence_mismatch", f"the evidence misdescribes {vote.principal}'s vote")
    if vote.is_requester:
        raise EvidenceError("self_approval", f"{vote.principal} is the requester or its accountable party")
    if policy.tier not in vote.tiers:
        raise EvidenceError("tier_not_allowed", f"{vote.principal} may not approve tier {policy.tier.value}")
    if not vote.groups & set(policy.eligible_groups):
        raise EvidenceError("not_eligible", f"{vote.principal} is in none of {', '.join(policy.eligible_groups)}")
    if vote.received_at > quorum.decided_at or quorum.decided_at > closes:
        raise EvidenceError("after_deadline", f"{vote.principal}'s vote or the quorum came after the window")
