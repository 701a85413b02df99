"""Count one request's votes: distinct eligible people, never strings.

`tally` looks at every ballot received for one request, in arrival order, and
returns a `TallyResult` in the python-tuf manner: the threshold, what counted,
what was refused and why, and `.verified` / `.missing`. Only eligible signers
count, so duplicates, strangers, the requester and ineligible approvers cannot
inflate it. A single eligible deny denies (docs/architecture.md §2.2), whatever came before.

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
``duplicate_deny``    an eligible deny after the first one (which is `denied_by`)
``duplicate``         an approval from a principal already counted
====================  ==========================================================

Pure: no clock reads, no signature checks. `Ballot.identity` must already be the
identity *proven* by the vote's proof (or attested by a configured attester);
this module does not verify proofs and does not build outcome events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from approvals.domain.directory import Approver, Directory, normalize
from approvals.domain.intake import Requirements
from contracts import VoteChoice

__all__ = [
    "AFTER_DEADLINE",
    "DIGEST_MISMATCH",
    "DUPLICATE",
    "DUPLICATE_DENY",
    "NOT_ELIGIBLE",
    "SELF_APPROVAL",
    "TIER_NOT_ALLOWED",
    "UNKNOWN_APPROVER",
    "Ballot",
    "Counted",
    "Refused",
    "TallyResult",
    "tally",
]

AFTER_DEADLINE = "after_deadline"
UNKNOWN_APPROVER = "unknown_approver"
SELF_APPROVAL = "self_approval"
TIER_NOT_ALLOWED = "tier_not_allowed"
NOT_ELIGIBLE = "not_eligible"
DIGEST_MISMATCH = "digest_mismatch"
DUPLICATE_DENY = "duplicate_deny"
DUPLICATE = "duplicate"


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


@dataclass(frozen=True)
class Counted:
    """A ballot that counts, attributed to the one person who cast it."""

    principal: str
    approver_type: str
    ballot: Ballot


@dataclass(frozen=True)
class Refused:
    """A ballot that does not count, with a stable snake_case reason code."""

    ballot: Ballot
    reason: str


@dataclass(frozen=True)
class TallyResult:
    """The outcome of counting: who counted, who was refused, who denied."""

    threshold: int
    counted: tuple[Counted, ...]
    refused: tuple[Refused, ...]
    denied_by: Counted | None

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"threshold must not be negative, not {self.threshold}")
        principals = [c.principal for c in self.counted]
        if len(set(principals)) != len(principals):
            raise ValueError("counted approvals must come from distinct principals")

    @property
    def missing(self) -> int:
        """How many more distinct approvals the threshold needs."""
        return max(0, self.threshold - len(self.counted))

    @property
    def verified(self) -> bool:
        """No deny and the threshold is met (threshold 0: met with no votes)."""
        return self.denied_by is None and self.missing == 0

    @property
    def principals(self) -> tuple[str, ...]:
        """The counted principals, in arrival order."""
        return tuple(c.principal for c in self.counted)


@dataclass(frozen=True)
class _Rules:
    """The fixed inputs every ballot is judged against."""

    requirements: Requirements
    digest: str
    requester_keys: frozenset[str]
    directory: Directory
    deadline: datetime

    def judge(self, ballot: Ballot) -> Approver | str:
        """The ballot's approver if it passes rules 1-6, else the first rule's reason code."""
        if _late(ballot.received_at, self.deadline):
            return AFTER_DEADLINE
        approver = self.directory.resolve(ballot.identity)
        if approver is None:
            return UNKNOWN_APPROVER
        if self.is_requester(approver):
            return SELF_APPROVAL
        if self.requirements.tier not in approver.tiers:
            return TIER_NOT_ALLOWED
        if approver.groups.isdisjoint(self.requirements.eligible_groups):
            return NOT_ELIGIBLE
        if ballot.digest != self.digest:
            return DIGEST_MISMATCH
        return approver

    def is_requester(self, approver: Approver) -> bool:
        """Whether the approver is the agent or the accountable party (docs/architecture.md §2.2).

        Through any alias: the requester ids are compared with every identity and the
        principal of the approver the ballot resolved to, not with the ballot's own
        spelling. This is `Directory.same_person(ballot.identity, requester_id)` for
        every requester id, computed once.
        """
        return not approver.keys.isdisjoint(self.requester_keys)


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
    rules = _Rules(
        requirements=requirements,
        digest=digest,
        requester_keys=frozenset(normalize(r) for r in requester_ids),
        directory=directory,
        deadline=deadline,
    )
    counted: dict[str, Counted] = {}
    refused: list[Refused] = []
    denied_by: Counted | None = None
    for ballot in ballots:
        judged = rules.judge(ballot)
        if isinstance(judged, str):
            refused.append(Refused(ballot, judged))
            continue
        vote = Counted(judged.principal, judged.type, ballot)
        key = normalize(judged.principal)
        if ballot.choice != VoteChoice.APPROVE:
            # Fail safe: anything but an approval is a deny, and the first eligible deny
            # wins, even over the denier's own earlier approval (docs/architecture.md §2.2).
            if denied_by is None:
                denied_by = vote
            else:
                refused.append(Refused(ballot, DUPLICATE_DENY))
        elif key in counted:
            # One person through two channels or two spellings counts once (docs/architecture.md §2.2).
            refused.append(Refused(ballot, DUPLICATE))
        else:
            counted[key] = vote
    return TallyResult(requirements.approvals, tuple(counted.values()), tuple(refused), denied_by)
