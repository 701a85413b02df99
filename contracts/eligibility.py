"""Who may approve a request, and whether enough distinct people did: one set of rules.

Approvals counts votes with it (`approvals/domain/tally.py`), the issuer re-checks
a quorum's verified votes with it (`issuer/domain/evidence.py`), chat decides
whom to ask and whose click to publish with it (`chat/domain/eligibility.py`),
and replay judges a recorded quorum against a candidate policy with it
(`atb/replay/whatif.py`).

`ApproverRules.refusal` judges one approver, by the first rule they fail:

====================  ==========================================================
``self_approval``     the approver is the requester: the agent or the accountable
                      party, through any alias (docs/architecture.md §2.2)
``tier_not_allowed``  the approver may not approve this request's tier
``not_eligible``      none of the approver's groups is an eligible group
====================  ==========================================================

An escalation (`contracts.reminders`) widens the rules from a point in time:
`ApproverRules.escalating` names the groups the policy escalates to and when
the quorum still missing makes them eligible, and `ApproverRules.at(time)` is
the rules in force for a vote received at that time (the escalation groups
eligible from that point on). Approvals and the issuer both judge each vote by
`at(its receipt time)`.

`ApproverRules.judge` first resolves an identity (``unknown_approver`` for a
stranger). `Count` then counts, in arrival order, in the python-tuf manner:
only eligible people count, each once (``duplicate``); anything but an approval
is a deny, and the first eligible deny is `denied_by` (later ones:
``duplicate_deny``). The result, `ThresholdResult`, says the threshold, who
counted, who was refused and why, `.missing` and `.verified`; its constructor
refuses a result that cannot exist (a negative threshold, one person counted twice).
When the policy asks for a composition of groups (``all_of`` / ``any_of``), the
result's `.quorum` is `contracts.quorum.assign` over the counted people: who
fills which group, and what is missing; `.verified` needs it satisfied.

Checks that belong to one caller (a deadline, a request digest, a vote's proof)
are that caller's: it refuses the ballot with `Count.refuse` before or after
asking these rules, in its own order.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Generic, TypeVar

from contracts.directory import Approver, Directory, normalize
from contracts.errors import ThresholdError
from contracts.events import Tier
from contracts.quorum import Composition, Member, QuorumResult, assign
from contracts.reasons import ReasonCode

__all__ = ["ApproverRules", "Count", "Counted", "RefusedBallot", "ThresholdResult"]

B = TypeVar("B")
"""What a caller counts: a ballot, a verified vote, a recorded vote; kept as evidence."""


@dataclass(frozen=True)
class ApproverRules:
    """The fixed facts every approver of one request is judged against."""

    tier: Tier
    eligible_groups: frozenset[str]
    requester_keys: frozenset[str]
    """The requester ids (agent, accountable party), normalised."""
    escalation_groups: frozenset[str] = frozenset()
    """The groups the request escalates to: eligible for votes received from `escalated_from` on."""
    escalated_from: datetime | None = None

    @classmethod
    def of(cls, tier: Tier, eligible_groups: Iterable[str], requester_ids: Iterable[str]) -> ApproverRules:
        return cls(Tier(tier), frozenset(eligible_groups), frozenset(normalize(r) for r in requester_ids))

    def escalating(self, groups: Iterable[str], from_time: datetime | None) -> ApproverRules:
        """These rules, with `groups` eligible for votes received at or after `from_time` (None: never)."""
        if from_time is None:
            return self
        return replace(self, escalation_groups=frozenset(groups), escalated_from=from_time)

    def at(self, when: datetime) -> ApproverRules:
        """The rules in force for a vote received at `when`: the escalation groups join once escalated.

        A time that cannot be compared with the escalation point (naive against aware)
        fails closed: the escalation groups stay out.
        """
        start = self.escalated_from
        if start is None or not self.escalation_groups:
            return self
        if (when.utcoffset() is None) != (start.utcoffset() is None) or when < start:
            return self
        return replace(self, eligible_groups=self.eligible_groups | self.escalation_groups)

    def is_requester(self, approver: Approver) -> bool:
        """Whether the approver is the agent or the accountable party, through any alias.

        The requester ids are compared with every identity and the principal of the
        approver (`Approver.keys`), not with one spelling: this is
        `Directory.same_person(approver.principal, requester_id)` for every requester id.
        """
        return not approver.keys.isdisjoint(self.requester_keys)

    def refusal(self, approver: Approver) -> ReasonCode | None:
        """The first rule the approver fails for this request, or None when they may approve it."""
        if self.is_requester(approver):
            return ReasonCode.SELF_APPROVAL
        if self.tier not in approver.tiers:
            return ReasonCode.TIER_NOT_ALLOWED
        if approver.groups.isdisjoint(self.eligible_groups):
            return ReasonCode.NOT_ELIGIBLE
        return None

    def judge(self, identity: str, directory: Directory) -> Approver | ReasonCode:
        """The approver behind `identity` if they may approve, else the first rule's code."""
        approver = directory.resolve(identity)
        if approver is None:
            return ReasonCode.UNKNOWN_APPROVER
        return self.refusal(approver) or approver


@dataclass(frozen=True)
class Counted(Generic[B]):
    """A ballot that counts, attributed to the one person who cast it."""

    principal: str
    approver_type: str
    ballot: B
    groups: frozenset[str] = frozenset()
    """The approver's groups, as the directory had them when the ballot was counted."""


@dataclass(frozen=True)
class RefusedBallot(Generic[B]):
    """A ballot that does not count, with its reason code."""

    ballot: B
    reason: ReasonCode

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", ReasonCode(self.reason))


@dataclass(frozen=True)
class ThresholdResult(Generic[B]):
    """The outcome of counting: the threshold, who counted, who was refused and why, who denied."""

    threshold: int
    counted: tuple[Counted[B], ...]
    refused: tuple[RefusedBallot[B], ...] = ()
    denied_by: Counted[B] | None = None
    composition: Composition = field(default_factory=Composition)
    quorum: QuorumResult = field(init=False, repr=False, compare=False)
    """`contracts.quorum.assign` over the counted people: the threshold and the composition, judged together."""

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ThresholdError(f"threshold must not be negative, not {self.threshold}")
        principals = [normalize(c.principal) for c in self.counted]
        if len(set(principals)) != len(principals):
            raise ThresholdError("counted approvals must come from distinct principals")
        members = (Member(c.principal, c.groups) for c in self.counted)
        object.__setattr__(self, "quorum", assign(self.threshold, self.composition, members))

    @property
    def missing(self) -> int:
        """How many more distinct approvals the threshold and the composition need, at least."""
        return self.quorum.missing

    @property
    def verified(self) -> bool:
        """No deny, the threshold is met and the composition satisfied (threshold 0: met with no votes)."""
        return self.denied_by is None and self.quorum.satisfied

    def group_of(self, counted: Counted[B]) -> str:
        """The group a counted approval fills: its assigned requirement, else the approver's directory type.

        A directory type that is none of the approver's groups is replaced by the first of
        them, so that the evidence always names one of the approver's own groups (the
        broker's policy refuses any other, docs/quorum-and-risk.md §1.4).
        """
        assigned = self.quorum.group_of(counted.principal)
        if assigned is not None:
            return assigned
        if counted.groups and counted.approver_type not in counted.groups:
            return min(counted.groups)
        return counted.approver_type

    @property
    def principals(self) -> tuple[str, ...]:
        """The counted principals, in arrival order."""
        return tuple(c.principal for c in self.counted)


@dataclass
class Count(Generic[B]):
    """Counts ballots in arrival order; `result()` is the ThresholdResult. Never raises on any ballots."""

    threshold: int
    composition: Composition = field(default_factory=Composition)
    _counted: dict[str, Counted[B]] = field(default_factory=dict)
    _refused: list[RefusedBallot[B]] = field(default_factory=list)
    _denied_by: Counted[B] | None = None

    def refuse(self, ballot: B, reason: ReasonCode) -> None:
        self._refused.append(RefusedBallot(ballot, reason))

    def add(self, approver: Approver, ballot: B, *, approves: bool) -> None:
        """An eligible approver's ballot: counted once per person; a deny is a deny."""
        vote = Counted(approver.principal, approver.type, ballot, approver.groups)
        if not approves:
            # Fail safe: anything but an approval is a deny, and the first eligible deny
            # wins, even over the denier's own earlier approval (docs/architecture.md §2.2).
            if self._denied_by is None:
                self._denied_by = vote
            else:
                self.refuse(ballot, ReasonCode.DUPLICATE_DENY)
            return
        key = normalize(approver.principal)
        if key in self._counted:
            # One person through two channels or two spellings counts once (docs/architecture.md §2.2).
            self.refuse(ballot, ReasonCode.DUPLICATE)
        else:
            self._counted[key] = vote

    def result(self) -> ThresholdResult[B]:
        return ThresholdResult(
            self.threshold, tuple(self._counted.values()), tuple(self._refused), self._denied_by, self.composition
        )
