"""contracts.eligibility: who may approve, and the threshold result (table-driven, "n of m" cases)."""

from __future__ import annotations

import pytest

from contracts import Tier
from contracts.directory import Approver, Directory
from contracts.eligibility import ApproverRules, Count, Counted, RefusedBallot, ThresholdResult
from contracts.errors import ThresholdError
from contracts.reasons import ReasonCode

AGENT = "spiffe://atb.local/agent/crm-bot"
PARTY = "emp-200"


def approver(principal: str, groups: set[str], tiers: set[Tier], *identities: str) -> Approver:
    return Approver(principal, "manager", frozenset(groups), frozenset(tiers), frozenset(identities or {principal}))


ALICE = approver("alice", {"manager"}, {Tier.MEDIUM, Tier.HIGH}, "slack:UALICE", "spiffe://atb.local/human/alice")
BOB = approver("bob", {"compliance"}, {Tier.HIGH, Tier.CRITICAL}, "slack:UBOB")
CAROL = approver("carol", {"manager"}, {Tier.MEDIUM}, "slack:UCAROL")
DAVE = approver("dave", {"manager"}, {Tier.HIGH}, "slack:UDAVE", "EMP-200")
ERIN = approver("erin", {"security"}, {Tier.HIGH}, "slack:UERIN")
DIRECTORY = Directory((ALICE, BOB, CAROL, DAVE, ERIN))
HIGH = ApproverRules.of(Tier.HIGH, ("manager", "compliance"), (AGENT, PARTY))


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("slack:UALICE", ALICE),
        ("SLACK:ualice", ALICE),
        ("spiffe://atb.local/human/alice", ALICE),
        ("slack:UBOB", BOB),
        ("slack:UCAROL", ReasonCode.TIER_NOT_ALLOWED),
        ("slack:UDAVE", ReasonCode.SELF_APPROVAL),
        ("emp-200", ReasonCode.SELF_APPROVAL),
        ("slack:UERIN", ReasonCode.NOT_ELIGIBLE),
        ("slack:UMALLORY", ReasonCode.UNKNOWN_APPROVER),
    ],
)
def test_judge(identity: str, expected: Approver | ReasonCode) -> None:
    assert HIGH.judge(identity, DIRECTORY) == expected


def test_self_approval_comes_before_the_tier_and_the_groups() -> None:
    # Dave is the accountable party and may not approve medium: self-approval is what he is told.
    medium = ApproverRules.of(Tier.MEDIUM, ("security",), (AGENT, PARTY))
    assert medium.refusal(DAVE) is ReasonCode.SELF_APPROVAL


@pytest.mark.parametrize(
    ("threshold", "ballots", "counted", "refused", "denied_by", "verified", "missing"),
    [
        (2, [], (), (), None, False, 2),
        (0, [], (), (), None, True, 0),
        (2, [(ALICE, True), (BOB, True)], ("alice", "bob"), (), None, True, 0),
        (2, [(ALICE, True), (ALICE, True)], ("alice",), (ReasonCode.DUPLICATE,), None, False, 1),
        (3, [(ALICE, True), (BOB, True), (DAVE, True)], ("alice", "bob", "dave"), (), None, True, 0),
        (1, [(ALICE, True), (BOB, False)], ("alice",), (), "bob", False, 0),
        (1, [(BOB, False), (ALICE, False)], (), (ReasonCode.DUPLICATE_DENY,), "bob", False, 1),
        (2, [(ALICE, True), (ALICE, False), (BOB, True)], ("alice", "bob"), (), "alice", False, 0),
    ],
)
def test_count(
    threshold: int,
    ballots: list[tuple[Approver, bool]],
    counted: tuple[str, ...],
    refused: tuple[ReasonCode, ...],
    denied_by: str | None,
    verified: bool,
    missing: int,
) -> None:
    count: Count[int] = Count(threshold)
    for number, (who, approves) in enumerate(ballots):
        count.add(who, number, approves=approves)
    result = count.result()
    assert result.principals == counted
    assert tuple(r.reason for r in result.refused) == refused
    assert (result.denied_by.principal if result.denied_by else None) == denied_by
    assert (result.verified, result.missing) == (verified, missing)


def test_refused_ballots_keep_their_reason() -> None:
    count: Count[str] = Count(1)
    count.refuse("late", ReasonCode.AFTER_DEADLINE)
    assert count.result().refused == (RefusedBallot("late", ReasonCode.AFTER_DEADLINE),)
    with pytest.raises(ValueError, match="not_a_code"):
        RefusedBallot("x", "not_a_code")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "counted",
    [
        (Counted("alice", "manager", 1), Counted("alice", "manager", 2)),
        (Counted("alice", "manager", 1), Counted("ALICE ", "manager", 2)),
    ],
)
def test_a_result_counting_one_person_twice_cannot_exist(counted: tuple[Counted[int], ...]) -> None:
    with pytest.raises(ThresholdError):
        ThresholdResult(2, counted)


def test_a_negative_threshold_cannot_exist() -> None:
    with pytest.raises(ThresholdError):
        ThresholdResult(-1, ())
