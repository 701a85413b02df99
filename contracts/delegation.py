"""Delegation (out of office): the one rule of a vote cast in someone else's place.

A `DelegationGranted` (contracts/approval_events.py), signed by the delegator,
lets a delegate vote in the delegator's place. Approvals counts such votes with
this module, the issuer re-checks a quorum's on-behalf evidence with it, and chat
(through the same `ApproverRules`) may ask it whom a click stands for.

`judge_on_behalf` judges one on-behalf vote, by the first rule it fails:

===========================  ===================================================
``delegation_invalid``       the grant is not for this delegate and delegator, or
                             names one person on both sides
``delegation_not_in_force``  the vote was received outside the grant's window,
                             or for a tier the grant does not cover
``unknown_approver``         the delegate or the delegator is not in the directory
``self_approval``            the delegate *or* the delegator is the requester or
                             its accountable party (nobody approves their own
                             request through someone else)
``tier_not_allowed``         the delegate, or the delegator, may not approve the tier
``not_eligible``             the delegate, or the delegator, is in no eligible group
===========================  ===================================================

The vote then counts as the delegator's (their groups fill the composition), and
`PersonCount` makes sure one human fills one place only: a delegator's own vote
and a delegate's vote for them count once (``duplicate``), and a delegate who
voted in their own right (or for someone else) adds no second approval.

Revocation is a fact about time the voter cannot show: the approvals service
checks it when the vote is received (`DelegationBook`), before the vote becomes
a ballot; from then on the ballot is judged by this module alone.

Pure: no I/O, no clock, no crypto (the grant's and the vote's proofs are verified
by the caller before it asks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from contracts.approval_events import DelegationGranted, DelegationRevoked, VoteOnBehalf
from contracts.directory import Approver, Directory, normalize
from contracts.eligibility import ApproverRules, Count
from contracts.envelope import EventDecodeError, decode_envelope, payload_of
from contracts.events import Tier
from contracts.reasons import ReasonCode

__all__ = [
    "MAX_DELEGATION",
    "Delegation",
    "DelegationBook",
    "OnBehalf",
    "PersonCount",
    "judge_approvers",
    "judge_on_behalf",
    "on_behalf_of_vote",
]

B = TypeVar("B")

MAX_DELEGATION = timedelta(days=90)
"""The longest window a delegator may grant (`atb delegate grant`, the console)."""


@dataclass(frozen=True)
class Delegation:
    """A verified grant: `delegate` may vote in `delegator`'s place within the window and tiers."""

    delegation_id: str
    delegator: str
    delegate: str
    not_before: datetime
    until: datetime
    tiers: frozenset[Tier] = frozenset()
    """Empty: every tier (the delegate still needs to be eligible for it)."""

    @classmethod
    def of(cls, grant: DelegationGranted) -> Delegation:
        return cls(
            grant.delegation_id, grant.delegator, grant.delegate, grant.not_before, grant.until, frozenset(grant.tiers)
        )

    def covers(self, tier: Tier, at: datetime) -> bool:
        """Whether the grant's window holds `at` and its tiers include `tier`."""
        if (at.utcoffset() is None) != (self.until.utcoffset() is None):
            return False  # not comparable: fail closed
        return self.not_before <= at <= self.until and (not self.tiers or tier in self.tiers)


@dataclass(frozen=True)
class OnBehalf:
    """An on-behalf vote judged admissible: it counts as `delegator`'s, cast by `delegate`."""

    delegator: Approver
    delegate: Approver
    delegation_id: str


def judge_on_behalf(
    rules: ApproverRules,
    delegation: Delegation,
    *,
    delegate_id: str,
    delegator_id: str,
    directory: Directory,
    at: datetime,
) -> OnBehalf | ReasonCode:
    """The first rule an on-behalf vote fails (see the module's table), or what it counts as."""
    delegate, delegator = directory.resolve(delegate_id), directory.resolve(delegator_id)
    if delegate is None or delegator is None:
        named = directory.resolve(delegation.delegate), directory.resolve(delegation.delegator)
        return ReasonCode.UNKNOWN_APPROVER if None not in named else ReasonCode.DELEGATION_INVALID
    return judge_approvers(rules, delegation, delegate=delegate, delegator=delegator, at=at)


def judge_approvers(
    rules: ApproverRules, delegation: Delegation, *, delegate: Approver, delegator: Approver, at: datetime
) -> OnBehalf | ReasonCode:
    """`judge_on_behalf` for a delegate and a delegator already resolved in the directory."""
    if normalize(delegation.delegate) not in delegate.keys or normalize(delegation.delegator) not in delegator.keys:
        return ReasonCode.DELEGATION_INVALID
    if normalize(delegate.principal) == normalize(delegator.principal):
        return ReasonCode.DELEGATION_INVALID
    if not delegation.covers(rules.tier, at):
        return ReasonCode.DELEGATION_NOT_IN_FORCE
    if rules.is_requester(delegate) or rules.is_requester(delegator):
        return ReasonCode.SELF_APPROVAL
    refusal = rules.refusal(delegate) or rules.refusal(delegator)
    if refusal is not None:
        return refusal
    return OnBehalf(delegator, delegate, delegation.delegation_id)


@dataclass
class PersonCount(Generic[B]):
    """`contracts.eligibility.Count`, where one human fills one place only.

    Every approval is attributed to the person it counts for (the delegator for an
    on-behalf vote) and to the person who cast it; a second approval for the same
    person, or by the same person, is a ``duplicate``. Denies are `Count`'s: the
    first eligible deny denies, whoever it stands for.
    """

    count: Count[B]
    _for: set[str] = field(default_factory=set)
    _by: set[str] = field(default_factory=set)

    def add(self, approver: Approver, ballot: B, *, approves: bool, cast_by: Approver | None = None) -> None:
        if not approves:
            self.count.add(approver, ballot, approves=False)
            return
        person, actor = normalize(approver.principal), normalize((cast_by or approver).principal)
        if person in self._for or actor in self._by or person in self._by or actor in self._for:
            self.count.refuse(ballot, ReasonCode.DUPLICATE)
            return
        self._for.add(person)
        self._by.add(actor)
        self.count.add(approver, ballot, approves=True)


def on_behalf_of_vote(vote_event: str) -> tuple[VoteOnBehalf, Delegation] | None:
    """The on-behalf vote and its grant inside a vote envelope's text, None for any other vote.

    For evidence already verified (a ballot's `vote_event`, a counted vote): it
    decodes, it does not check proofs. An on-behalf vote whose grant cannot be
    decoded is returned with a grant that names nobody (``delegation_invalid``).
    """
    try:
        vote = payload_of(decode_envelope(vote_event.encode()))
    except EventDecodeError:
        return None
    if not isinstance(vote, VoteOnBehalf):
        return None
    try:
        grant = payload_of(decode_envelope(vote.delegation_event.encode()))
    except EventDecodeError:
        grant = None
    if not isinstance(grant, DelegationGranted):
        return vote, Delegation("", "", "", vote.cast_at, vote.cast_at)  # names nobody: delegation_invalid
    return vote, Delegation.of(grant)


@dataclass
class DelegationBook:
    """Revocations by delegation id and delegator, from the delegation events in the order they were read.

    A revocation whose proof is not its delegator's (or an operator's the caller trusts for
    it) is the caller's to refuse before `note`; this book only remembers. It ends a
    delegation only if it names the grant's delegator: a revocation that anyone signed
    for a delegation id of someone else's ends nothing.
    """

    _revoked_at: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def note(self, event: DelegationGranted | DelegationRevoked) -> None:
        if isinstance(event, DelegationRevoked):
            key = (event.delegation_id, event.delegator)
            known = self._revoked_at.get(key)
            self._revoked_at[key] = min(known, event.revoked_at) if known else event.revoked_at

    def revoked_at(self, delegation_id: str, delegator: str) -> datetime | None:
        """When `delegator`'s delegation `delegation_id` ends, by the earliest revocation noted; None if never."""
        return self._revoked_at.get((delegation_id, delegator))

    def revoked(self, delegation_id: str, at: datetime, delegator: str) -> bool:
        """Whether `delegator`'s delegation `delegation_id` was revoked at or before `at`."""
        revoked_at = self.revoked_at(delegation_id, delegator)
        return revoked_at is not None and revoked_at <= at
