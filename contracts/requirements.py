"""What the policy requires of one request, and the tier floors it may never go under.

`Requirements` is the one shape of the policy's answer to `data.atb.poa.requirements`
(opa/policy/poa.rego): approvals decides with it, the issuer re-checks with it,
replay compares with it. Its constructor enforces the rules of
docs/architecture.md §2.5 and §5.4, so a policy that asks for less than a tier
floor, a critical request without a ticket, or a PoA lifetime outside 1 to 300 s
never becomes a value anyone decides with. It carries the composition of groups
the quorum must have (`contracts.quorum.Composition`, docs/quorum-and-risk.md);
a composition naming a group that is not eligible, or needing more people than
`approvals`, is refused too.

`RequirementsRecord` (contracts/events.py) is its wire form inside
ApprovalStateChanged, a published event: `record()` and `from_record()` convert,
and the record's schema does not change.

Pure: no I/O; `from_policy` parses an answer something else fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from contracts.errors import RequirementsError
from contracts.events import CompositionRecord, GroupCountRecord, RemindersRecord, RequirementsRecord, Tier
from contracts.justification import Justification
from contracts.poa import MAX_LIFETIME_SECONDS
from contracts.quorum import Composition, GroupCount
from contracts.reminders import ReminderPolicy

__all__ = ["TIER_FLOORS", "Requirements", "RequirementsError", "composition_of", "composition_record", "tier_floor"]

TIER_FLOORS: Mapping[Tier, int] = MappingProxyType({Tier.LOW: 0, Tier.MEDIUM: 1, Tier.HIGH: 2, Tier.CRITICAL: 2})
"""Distinct approvals each tier needs at least (docs/architecture.md §2.5); the policy may ask for more, never less."""


def tier_floor(tier: Tier) -> int:
    return TIER_FLOORS[tier]


@dataclass(frozen=True)
class Requirements:
    """The policy's answer to "what does this request need"."""

    tier: Tier
    approvals: int
    ticket_required: bool
    eligible_groups: tuple[str, ...]
    pending_seconds: int
    poa_ttl_seconds: int
    policy_version: str
    composition: Composition = field(default_factory=Composition)
    """Which groups the distinct approvers must come from (empty: any eligible group)."""
    justification: Justification = Justification.NONE
    """Which votes need a written reason (policy data `justification`, per tier; contracts.justification)."""
    reminders: ReminderPolicy = field(default_factory=ReminderPolicy)
    """When to remind the approvers and whom to escalate to (policy data `reminders`; contracts.reminders)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", Tier(self.tier))
        object.__setattr__(self, "justification", Justification(self.justification))
        object.__setattr__(self, "eligible_groups", tuple(self.eligible_groups))
        stray = sorted(self.composition.groups - set(self.eligible_groups))
        if stray:
            raise RequirementsError(f"the composition names groups that are not eligible: {', '.join(stray)}")
        if self.composition.minimum > self.approvals:
            raise RequirementsError(
                f"the composition ({self.composition.describe()}) needs more than the {self.approvals} approvals asked"
            )
        floor = TIER_FLOORS[self.tier]
        if self.approvals < floor:
            raise RequirementsError(f"tier {self.tier.value} needs at least {floor} approvals, not {self.approvals}")
        if self.tier is Tier.CRITICAL and not self.ticket_required:
            raise RequirementsError(
                "tier critical always requires an external ticket reference (docs/architecture.md §2.5)"
            )
        if self.pending_seconds < 0 or (self.approvals > 0 and self.pending_seconds < 1):
            raise RequirementsError(f"pending window of {self.pending_seconds}s leaves no time to vote")
        if not 1 <= self.poa_ttl_seconds <= MAX_LIFETIME_SECONDS:
            raise RequirementsError(
                f"PoA TTL must be between 1 s and {MAX_LIFETIME_SECONDS} s (docs/architecture.md §5.4)"
            )

    @classmethod
    def from_policy(cls, answer: JsonValue) -> Requirements:
        """Parse the policy's answer; RequirementsError if it is malformed or breaks a rule."""
        try:
            parsed = _PolicyAnswer.model_validate(answer)
        except ValidationError as exc:
            raise RequirementsError(f"policy answer malformed: {exc.error_count()} errors") from exc
        fields = parsed.model_dump(exclude={"composition", "reminders"})
        return cls(
            **fields,
            composition=Composition.from_json(parsed.composition),
            reminders=ReminderPolicy.from_json(parsed.reminders),
        )

    @classmethod
    def from_record(cls, record: RequirementsRecord) -> Requirements:
        return cls(
            tier=record.tier,
            approvals=record.approvals,
            ticket_required=record.ticket_required,
            eligible_groups=record.eligible_groups,
            pending_seconds=record.pending_seconds,
            poa_ttl_seconds=record.poa_ttl_seconds,
            policy_version=record.policy_version,
            composition=composition_of(record.composition),
            justification=Justification(record.justification),
            reminders=ReminderPolicy(
                record.reminders.remind_at, record.reminders.escalate_at, record.reminders.escalate_to
            ),
        )

    def record(self) -> RequirementsRecord:
        """The wire form kept in ApprovalStateChanged."""
        return RequirementsRecord(
            tier=self.tier,
            approvals=self.approvals,
            ticket_required=self.ticket_required,
            eligible_groups=self.eligible_groups,
            pending_seconds=self.pending_seconds,
            poa_ttl_seconds=self.poa_ttl_seconds,
            policy_version=self.policy_version,
            composition=composition_record(self.composition),
            justification=self.justification.value,
            reminders=RemindersRecord(
                remind_at=self.reminders.remind_at,
                escalate_at=self.reminders.escalate_at,
                escalate_to=self.reminders.escalate_to,
            ),
        )


def composition_of(record: CompositionRecord) -> Composition:
    """The composition of its wire form (`RequirementsRecord.composition`, `ApprovalRequired.composition`)."""
    return Composition(
        tuple(GroupCount(e.group, e.count) for e in record.all_of),
        tuple(GroupCount(e.group, e.count) for e in record.any_of),
    )


def composition_record(composition: Composition) -> CompositionRecord:
    """The wire form of a composition."""
    return CompositionRecord(
        all_of=tuple(GroupCountRecord(group=e.group, count=e.count) for e in composition.all_of),
        any_of=tuple(GroupCountRecord(group=e.group, count=e.count) for e in composition.any_of),
    )


class _PolicyAnswer(BaseModel):
    """The fields of `data.atb.poa.requirements`; others are ignored (the policy may add explanations)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tier: Tier
    approvals: int
    ticket_required: bool
    eligible_groups: tuple[str, ...]
    pending_seconds: int
    poa_ttl_seconds: int
    policy_version: str
    composition: JsonValue = None
    """``{"all_of": [...], "any_of": [...]}``; absent: the empty composition."""
    justification: Justification = Justification.NONE
    """Which votes need a reason: ``none``, ``approve``, ``deny``, ``both``; absent: none."""
    reminders: JsonValue = None
    """``{"remind_at": [...], "escalate_at": f, "escalate_to": [...]}``; absent: none (contracts.reminders)."""
