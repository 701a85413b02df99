"""What counts as a change in a policy what-if (atb/replay/whatif.py), table-driven."""

from __future__ import annotations

import pytest

from atb.replay.whatif import (
    Change,
    Evaluated,
    RecordedDecision,
    Requirement,
    Skipped,
    compare_decision,
    compare_requirement,
    is_policy_deny,
    recorded_action_tier,
)
from contracts import Decision

ALLOW, DENY = Decision.ALLOW, Decision.DENY
TOO_LOW = "tier_too_low: PoA was issued for low, the action is medium"


def _recorded(decision: Decision, *reasons: str, tier: str | None = "low") -> RecordedDecision:
    return RecordedDecision(
        "req-1", "act-1", "crm.contact.read", decision, reasons, recorded_action_tier(reasons, tier)
    )


def _candidate(allow: bool, tier: str = "low", *reasons: str) -> Evaluated:
    return Evaluated(allow, reasons, tier, "v2")


@pytest.mark.parametrize(
    ("recorded", "candidate", "kind"),
    [
        (_recorded(ALLOW, "poa_valid"), _candidate(True), None),
        (_recorded(ALLOW, "poa_valid"), _candidate(False, "medium", "tier_too_low: x"), "would_deny"),
        (_recorded(DENY, "approval_missing: x", tier="medium"), _candidate(True, "medium"), "would_allow"),
        (_recorded(DENY, "poa_required: x", tier=None), _candidate(True), "would_allow"),
        (_recorded(DENY, "tier_too_low: x", tier="low"), _candidate(False, "high", "tier_too_low: y"), "tier_change"),
        (_recorded(ALLOW, "poa_valid", tier="high"), _candidate(True, "medium"), "tier_change"),
        (_recorded(ALLOW, "unmandated_low_risk: x", tier=None), _candidate(True, "low"), None),
        (_recorded(DENY, "tier_too_low: x"), _candidate(False, "medium", "tier_too_low: y"), "tier_change"),
        (_recorded(DENY, TOO_LOW), _candidate(False, "medium", TOO_LOW), None),
        (_recorded(DENY, TOO_LOW), _candidate(False, "high", "tier_too_low: y"), "tier_change"),
        (_recorded(DENY, "tier_too_low: x", tier="medium"), _candidate(False, "medium"), None),
    ],
)
def test_decisions(recorded: RecordedDecision, candidate: Evaluated, kind: str | None) -> None:
    change = compare_decision(recorded, candidate)
    assert (change.kind if isinstance(change, Change) else change) == kind


@pytest.mark.parametrize(
    "reasons",
    [
        ("poa_single_use_replay_blocked: already spent",),
        ("bad_signature: x",),
        ("poa_revoked: x",),
        ("policy_unavailable: OPA down",),
        ("tier_too_low: x", "digest_mismatch: y"),  # one non-policy reason: denied before the policy
        (),
    ],
)
def test_denies_the_policy_did_not_make_are_not_reevaluated(reasons: tuple[str, ...]) -> None:
    assert not is_policy_deny(reasons)
    outcome = compare_decision(_recorded(DENY, *reasons), _candidate(True))
    assert isinstance(outcome, Skipped)
    assert "before the policy was asked" in outcome.why


def test_a_would_deny_carries_the_candidates_reasons_and_tiers() -> None:
    change = compare_decision(_recorded(ALLOW, "poa_valid"), _candidate(False, "medium", "tier_too_low: a", "x: b"))
    assert isinstance(change, Change)
    assert (change.recorded, change.candidate, change.tier_before, change.tier_after) == (
        "allow",
        "deny",
        "low",
        "medium",
    )
    assert change.reasons == ("tier_too_low: a", "x: b")


@pytest.mark.parametrize(
    ("recorded", "candidate", "kind"),
    [
        (Requirement("low", 0), Requirement("low", 0, False), None),
        (Requirement("low", 0), Requirement("medium", 1, False), "tier_change"),
        (Requirement("medium", 1, False), Requirement("medium", 2, False), "requirements_change"),
        (Requirement("critical", 2, True), Requirement("critical", 2, False), "requirements_change"),
        (Requirement("high"), Requirement("high", 3, False), None),  # only the tier was recorded
        (Requirement("high"), Requirement("critical", 2, True), "tier_change"),
    ],
)
def test_requirements(recorded: Requirement, candidate: Requirement, kind: str | None) -> None:
    change = compare_requirement("req-1", "a.b", recorded, candidate)
    assert (change.kind if change else None) == kind
    if change:
        assert (change.tier_before, change.tier_after) == (recorded.tier, candidate.tier)
