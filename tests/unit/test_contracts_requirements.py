"""contracts.requirements: the one shape of the policy's requirements, with the tier floors (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import RequirementsRecord, Tier
from contracts.justification import Justification
from contracts.quorum import Composition
from contracts.reminders import ReminderPolicy
from contracts.requirements import TIER_FLOORS, Requirements, RequirementsError, tier_floor


def answer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tier": "high",
        "approvals": 2,
        "ticket_required": False,
        "eligible_groups": ["manager", "compliance"],
        "pending_seconds": 900,
        "poa_ttl_seconds": 120,
        "policy_version": "v1",
    }
    return {**base, **changes}


@pytest.mark.parametrize(("tier", "floor"), [(Tier.LOW, 0), (Tier.MEDIUM, 1), (Tier.HIGH, 2), (Tier.CRITICAL, 2)])
def test_tier_floors(tier: Tier, floor: int) -> None:
    assert TIER_FLOORS[tier] == tier_floor(tier) == floor


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [
        ({}, True),
        ({"approvals": 3}, True),
        ({"approvals": 1}, False),
        ({"tier": "medium", "approvals": 0}, False),
        ({"tier": "medium", "approvals": 1}, True),
        ({"tier": "low", "approvals": 0, "pending_seconds": 0}, True),
        ({"tier": "critical", "ticket_required": False}, False),
        ({"tier": "critical", "ticket_required": True}, True),
        ({"pending_seconds": 0}, False),
        ({"pending_seconds": -1}, False),
        ({"poa_ttl_seconds": 0}, False),
        ({"poa_ttl_seconds": 300}, True),
        ({"poa_ttl_seconds": 301}, False),
        ({"tier": "extreme"}, False),
        ({"approvals": "two"}, False),
        ({"eligible_groups": None}, False),
        ({"explanation": "extra fields of the policy are ignored"}, True),
    ],
)
def test_from_policy_keeps_the_rules(changes: dict[str, Any], accepted: bool) -> None:
    if accepted:
        assert isinstance(Requirements.from_policy(answer(**changes)), Requirements)
    else:
        with pytest.raises(RequirementsError):
            Requirements.from_policy(answer(**changes))


def test_a_missing_field_is_refused() -> None:
    incomplete = answer()
    del incomplete["policy_version"]
    with pytest.raises(RequirementsError):
        Requirements.from_policy(incomplete)


def test_a_requirements_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least 2 approvals"):
        Requirements(Tier.HIGH, 1, False, (), 60, 60, "v")


def test_the_record_round_trips_and_keeps_its_wire_format() -> None:
    requirements = Requirements.from_policy(answer())
    record = requirements.record()
    assert isinstance(record, RequirementsRecord)
    assert Requirements.from_record(record) == requirements
    assert set(RequirementsRecord.model_fields) == {
        "tier",
        "approvals",
        "ticket_required",
        "eligible_groups",
        "pending_seconds",
        "poa_ttl_seconds",
        "policy_version",
        "composition",
        "justification",
        "reminders",
    }
    # `composition` was added with a default: a record written before it still reads, as no composition.
    old = record.model_dump(mode="json", exclude={"composition"})
    assert Requirements.from_record(RequirementsRecord.model_validate(old)).composition == Composition()
    # So was `justification` (contracts.justification): an older record asks no vote for a reason.
    older = record.model_dump(mode="json", exclude={"justification"})
    assert Requirements.from_record(RequirementsRecord.model_validate(older)).justification is Justification.NONE
    # And `reminders` (contracts.reminders): an older record reminds nobody.
    before = record.model_dump(mode="json", exclude={"reminders"})
    assert Requirements.from_record(RequirementsRecord.model_validate(before)).reminders == ReminderPolicy()
