"""contracts.quorum: compositions, the assignment, what is missing; and the requirements and issuer using them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import JsonValue

from contracts import Tier
from contracts.eligibility import Count
from contracts.errors import RequirementsError
from contracts.quorum import Assignment, Composition, GroupCount, Member, Shortfall, assign
from contracts.reasons import ReasonCode
from contracts.requirements import Requirements, composition_of, composition_record
from issuer.domain import QuorumEvidenceError
from issuer.domain.evidence import check_quorum
from tests.unit.test_issuer_evidence import ALICE, BOB, POLICY, _quorum, _vote

MANAGER_AND_COMPLIANCE = Composition((GroupCount("manager", 1), GroupCount("compliance", 1)))


def member(principal: str, *groups: str) -> Member:
    return Member(principal, frozenset(groups))


# --- the assignment -------------------------------------------------------------------


def test_two_managers_do_not_make_manager_and_compliance() -> None:
    result = assign(2, MANAGER_AND_COMPLIANCE, [member("alice", "manager"), member("dave", "manager")])
    assert not result.satisfied
    assert result.shortfalls == (Shortfall("all_of", "compliance", 1),)
    assert result.missing == 1
    assert [r.code for r in result.reasons] == [ReasonCode.COMPOSITION_NOT_MET]
    assert result.assignments == (Assignment("alice", "manager"), Assignment("dave", None))


def test_manager_and_compliance_do() -> None:
    result = assign(2, MANAGER_AND_COMPLIANCE, [member("bob", "compliance"), member("alice", "manager")])
    assert result.satisfied
    assert result.missing == 0
    assert (result.group_of("alice"), result.group_of("BOB")) == ("manager", "compliance")


def test_a_person_in_two_groups_fills_one_whatever_the_order() -> None:
    # Greedy in this order would give erin the manager slot and leave compliance open.
    people = [member("erin", "manager", "compliance"), member("alice", "manager")]
    for order in (people, people[::-1]):
        result = assign(2, MANAGER_AND_COMPLIANCE, order)
        assert result.satisfied
        assert result.assignments == (Assignment("alice", "manager"), Assignment("erin", "compliance"))
    alone = assign(2, MANAGER_AND_COMPLIANCE, [member("erin", "manager", "compliance")])
    assert not alone.satisfied
    assert alone.missing == 1


def test_any_of_and_the_total() -> None:
    composition = Composition((GroupCount("security", 1),), (GroupCount("compliance", 2), GroupCount("manager", 1)))
    assert composition.minimum == 2
    assert composition.describe() == "1 security + one of (2 compliance | 1 manager)"
    met = assign(3, composition, [member("carol", "security"), member("alice", "manager"), member("x", "finance")])
    assert met.satisfied
    assert met.alternative == GroupCount("manager", 1)
    assert met.group_of("x") is None
    short = assign(3, composition, [member("carol", "security", "manager")])
    # The alternative closest to being met is reported: one more manager, not two compliance.
    assert short.shortfalls == (Shortfall("any_of", "manager", 1), Shortfall("total", None, 2))
    assert short.missing == 2
    assert "1 more from manager (or instead: 2 compliance)" in short.describe()


def test_the_empty_composition_is_the_plain_count() -> None:
    assert assign(2, Composition(), [member("a", "g"), member("b", "h")]).satisfied
    result = assign(2, Composition(), [member("a", "g")])
    assert result.shortfalls == (Shortfall("total", None, 1),)
    assert result.reasons[0].code is ReasonCode.QUORUM_SHORT


def test_one_principal_under_two_spellings_is_one_person() -> None:
    result = assign(2, MANAGER_AND_COMPLIANCE, [member("Erin", "manager"), member("erin ", "compliance")])
    assert len(result.assignments) == 1
    assert not result.satisfied


def test_count_judges_the_composition() -> None:
    count: Count[str] = Count(2, MANAGER_AND_COMPLIANCE)
    count.add(ALICE.approver, "a", approves=True)
    count.add(replace(ALICE.approver, principal="dave", identities=frozenset({"slack:dave"})), "d", approves=True)
    assert not count.result().verified
    assert count.result().missing == 1
    count.add(BOB.approver, "b", approves=True)
    result = count.result()
    assert result.verified
    assert [result.group_of(c) for c in result.counted] == ["manager", "manager", "compliance"]


# --- the composition's wire forms and the requirements' rules ---------------------------


@pytest.mark.parametrize(
    "value",
    [
        [],
        {"all_of": {"group": "manager", "count": 1}},
        {"all_of": [{"group": "manager"}]},
        {"all_of": [{"group": "manager", "count": 0}]},
        {"all_of": [{"group": "manager", "count": 11}]},
        {"all_of": [{"group": "manager", "count": True}]},
        {"all_of": [{"group": "", "count": 1}]},
        {"all_of": [{"group": "manager", "count": 1}, {"group": "manager", "count": 1}]},
        {"all_of": [{"group": "manager", "count": 1, "extra": 1}]},
        {"none_of": []},
    ],
)
def test_a_malformed_composition_is_refused(value: JsonValue) -> None:
    with pytest.raises(RequirementsError):
        Composition.from_json(value)


def test_the_composition_round_trips() -> None:
    composition = Composition((GroupCount("manager", 1),), (GroupCount("compliance", 1), GroupCount("security", 2)))
    assert Composition.from_json(composition.to_json()) == composition
    assert composition_of(composition_record(composition)) == composition
    assert Composition.from_json(None) == Composition.from_json({}) == Composition()


def policy_answer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tier": "high",
        "approvals": 2,
        "ticket_required": False,
        "eligible_groups": ["manager", "compliance", "security"],
        "pending_seconds": 900,
        "poa_ttl_seconds": 120,
        "policy_version": "v1",
        "composition": MANAGER_AND_COMPLIANCE.to_json(),
    }
    return {**base, **changes}


def test_the_requirements_carry_the_composition() -> None:
    requirements = Requirements.from_policy(policy_answer())
    assert requirements.composition == MANAGER_AND_COMPLIANCE
    assert Requirements.from_record(requirements.record()) == requirements
    assert Requirements.from_policy(policy_answer(composition=None)).composition == Composition()


@pytest.mark.parametrize(
    "changes",
    [
        {"eligible_groups": ["manager"]},  # compliance is not eligible
        {"composition": {"all_of": [{"group": "manager", "count": 2}, {"group": "compliance", "count": 1}]}},
        {"composition": "manager+compliance"},
    ],
)
def test_a_composition_that_cannot_be_met_within_the_requirements_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(RequirementsError):
        Requirements.from_policy(policy_answer(**changes))


# --- the issuer re-checks the composition on the verified votes -------------------------

PAYMENT = replace(POLICY, eligible_groups=("manager", "compliance", "security"), composition=MANAGER_AND_COMPLIANCE)


def test_the_issuer_accepts_manager_and_compliance() -> None:
    result = check_quorum(_quorum(), [ALICE, BOB], PAYMENT)
    assert [result.group_of(c) for c in result.counted] == ["manager", "compliance"]


def test_the_issuer_refuses_two_managers() -> None:
    with pytest.raises(QuorumEvidenceError) as refused:
        check_quorum(_quorum(), [ALICE, _vote("dave")], PAYMENT)
    assert refused.value.code == ReasonCode.COMPOSITION_NOT_MET
    # Without a composition the same two managers make a quorum.
    check_quorum(_quorum(), [ALICE, _vote("dave")], POLICY)


def test_the_issuer_refuses_evidence_that_puts_an_approver_in_another_group() -> None:
    erin = replace(_vote("erin", "manager"), claimed_type="manager")
    erin = replace(erin, approver=replace(erin.approver, groups=frozenset({"manager", "compliance"})))
    # The issuer assigns erin to compliance (alice is the only manager); evidence saying manager is refused.
    with pytest.raises(QuorumEvidenceError) as refused:
        check_quorum(_quorum(), [ALICE, erin], PAYMENT)
    assert refused.value.code == ReasonCode.EVIDENCE_MISMATCH
    check_quorum(_quorum(), [ALICE, replace(erin, claimed_type="compliance")], PAYMENT)


def test_the_issuer_refuses_evidence_with_other_groups_than_the_directory() -> None:
    with pytest.raises(QuorumEvidenceError) as refused:
        check_quorum(_quorum(), [ALICE, replace(BOB, claimed_groups=("compliance", "manager"))], PAYMENT)
    assert refused.value.code == ReasonCode.EVIDENCE_MISMATCH
    check_quorum(_quorum(), [ALICE, replace(BOB, claimed_groups=("compliance",))], PAYMENT)


def test_a_higher_tier_keeps_its_floor_with_a_composition() -> None:
    with pytest.raises(RequirementsError):
        Requirements(Tier.HIGH, 1, False, ("manager",), 60, 60, "v", Composition((GroupCount("manager", 1),)))


def test_an_extra_approver_is_typed_by_one_of_their_own_groups() -> None:
    count: Count[str] = Count(2, MANAGER_AND_COMPLIANCE)
    odd = replace(ALICE.approver, principal="otto", type="finance", groups=frozenset({"security", "manager"}))
    for approver, ballot in ((ALICE.approver, "a"), (BOB.approver, "b"), (odd, "o")):
        count.add(approver, ballot, approves=True)
    result = count.result()
    assert result.verified
    # otto fills nothing (alice is the manager); his directory type is none of his groups.
    assert [result.group_of(c) for c in result.counted] == ["manager", "compliance", "manager"]
