"""What counts as a change in a policy what-if (atb/replay/whatif.py), table-driven."""

from __future__ import annotations

import pytest

from atb.replay.whatif import (
    POLICY_DENY_CODES,
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
from contracts.reasons import Reason, ReasonCode

ALLOW, DENY = Decision.ALLOW, Decision.DENY
C = ReasonCode


def r(code: ReasonCode, detail: str = "x") -> Reason:
    return Reason(code, detail)


TOO_LOW = r(C.TIER_TOO_LOW, "PoA was issued for low, the action is medium")
VALID = r(C.POA_VALID, "")


def _recorded(
    decision: Decision, *reasons: Reason, tier: str | None = "low", action_tier: str | None = None
) -> RecordedDecision:
    """A recorded decision; `action_tier` as a v2 decision records it (None: a v1 record, or not asked)."""
    return RecordedDecision(
        "req-1", "act-1", "crm.contact.read", decision, reasons, recorded_action_tier(action_tier, reasons, tier)
    )


def _candidate(allow: bool, tier: str = "low", *reasons: Reason) -> Evaluated:
    return Evaluated(allow, reasons, tier, "v2")


@pytest.mark.parametrize(
    ("recorded", "candidate", "kind"),
    [
        (_recorded(ALLOW, VALID), _candidate(True), None),
        (_recorded(ALLOW, VALID), _candidate(False, "medium", r(C.TIER_TOO_LOW)), "would_deny"),
        (_recorded(DENY, r(C.APPROVAL_MISSING), tier="medium"), _candidate(True, "medium"), "would_allow"),
        (_recorded(DENY, r(C.POA_REQUIRED), tier=None), _candidate(True), "would_allow"),
        (_recorded(DENY, r(C.PRINCIPALS_MISSING), tier="medium"), _candidate(True, "medium"), "would_allow"),
        (_recorded(ALLOW, VALID, tier="high"), _candidate(True, "medium"), "tier_change"),
        (_recorded(ALLOW, r(C.UNMANDATED_LOW_RISK), tier=None), _candidate(True, "low"), None),
        # v2: the action's tier is recorded, whatever the PoA's.
        (_recorded(DENY, TOO_LOW, action_tier="medium"), _candidate(False, "medium", TOO_LOW), None),
        (_recorded(DENY, TOO_LOW, action_tier="medium"), _candidate(False, "high", r(C.TIER_TOO_LOW)), "tier_change"),
        (_recorded(ALLOW, VALID, tier="high", action_tier="medium"), _candidate(True, "medium"), None),
        (_recorded(ALLOW, VALID, tier="high", action_tier="medium"), _candidate(True, "high"), "tier_change"),
        # v1: no recorded action tier; after tier_too_low the PoA's tier is known not to be it.
        (_recorded(DENY, TOO_LOW), _candidate(False, "medium", TOO_LOW), None),
        (_recorded(DENY, TOO_LOW), _candidate(False, "high", r(C.TIER_TOO_LOW)), None),
        (_recorded(DENY, r(C.APPROVAL_MISSING), tier="medium"), _candidate(False, "medium"), None),
        (_recorded(DENY, r(C.APPROVAL_MISSING), tier="medium"), _candidate(False, "high"), "tier_change"),
    ],
)
def test_decisions(recorded: RecordedDecision, candidate: Evaluated, kind: str | None) -> None:
    change = compare_decision(recorded, candidate)
    assert (change.kind if isinstance(change, Change) else change) == kind


@pytest.mark.parametrize(
    ("action_tier", "reasons", "poa_tier", "expected"),
    [
        ("high", (VALID,), "critical", "high"),
        ("medium", (TOO_LOW,), "low", "medium"),
        (None, (VALID,), "critical", "critical"),
        (None, (TOO_LOW,), "low", None),
        (None, (r(C.POA_REQUIRED),), None, None),
    ],
)
def test_the_recorded_action_tier(
    action_tier: str | None, reasons: tuple[Reason, ...], poa_tier: str | None, expected: str | None
) -> None:
    assert recorded_action_tier(action_tier, reasons, poa_tier) == expected


@pytest.mark.parametrize(
    "reasons",
    [
        (r(C.POA_SINGLE_USE_REPLAY_BLOCKED, "already spent"),),
        (r(C.BAD_SIGNATURE),),
        (r(C.POA_REVOKED),),
        (r(C.POLICY_UNAVAILABLE, "OPA down"),),
        (r(C.TIER_TOO_LOW), r(C.DIGEST_MISMATCH)),  # one non-policy reason: denied before the policy
        # A detail that reads like a policy code does not make it one: the code decides.
        (r(C.POA_REVOKED, "tier_too_low: withdrawn"),),
        (),
    ],
)
def test_denies_the_policy_did_not_make_are_not_reevaluated(reasons: tuple[Reason, ...]) -> None:
    assert not is_policy_deny(reasons)
    outcome = compare_decision(_recorded(DENY, *reasons), _candidate(True))
    assert isinstance(outcome, Skipped)
    assert "before the policy was asked" in outcome.why


def test_every_policy_code_is_a_policy_deny() -> None:
    for code in POLICY_DENY_CODES:
        assert is_policy_deny((r(code),))


def test_a_would_deny_carries_the_candidates_reasons_and_tiers() -> None:
    reasons = (r(C.TIER_TOO_LOW, "a"), r(C.TICKET_MISSING, "b"))
    change = compare_decision(_recorded(ALLOW, VALID), _candidate(False, "medium", *reasons))
    assert isinstance(change, Change)
    assert (change.recorded, change.candidate, change.tier_before, change.tier_after) == (
        "allow",
        "deny",
        "low",
        "medium",
    )
    assert change.reasons == reasons


def test_a_would_allow_carries_the_recorded_reasons() -> None:
    change = compare_decision(_recorded(DENY, r(C.APPROVAL_MISSING, "m"), tier="medium"), _candidate(True, "medium"))
    assert isinstance(change, Change)
    assert change.reasons == (r(C.APPROVAL_MISSING, "m"),)


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
