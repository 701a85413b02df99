"""An escalation group becomes eligible at the escalation point, in approvals' tally and the issuer's check alike.

The policy may escalate to a group that is not otherwise eligible for the tier
(`contracts.reminders`): from the escalation point on (the share of the
pending window at which the quorum, still missing, is escalated), a member of
that group may approve, under every other rule (tier, not the requester). A
vote received before the point is not eligible. Approvals judges each ballot
by its receipt time; the issuer judges each verified vote by the receipt time
approvals recorded, with the clock-skew slack.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from approvals.domain.tally import tally
from contracts import Tier
from contracts.eligibility import ApproverRules
from contracts.reasons import ReasonCode
from contracts.reminders import ReminderPolicy, escalation_point
from issuer.domain import QuorumEvidenceError
from issuer.domain.evidence import check_quorum
from tests.unit.test_approvals_tally import DEADLINE, DIRECTORY, REQUESTER, RIGHT, requirements, vote
from tests.unit.test_issuer_evidence import ALICE, POLICY, T0, _approver, _quorum, _vote

TO_FINANCE = ReminderPolicy((50,), 80, ("finance",))
"""Pending 300 s in the tally's requirements: the point is 60 s before the deadline."""


def _tally(*ballots: object) -> tuple[list[str], list[tuple[str, ReasonCode]]]:
    needs = replace(requirements(Tier.HIGH), reminders=TO_FINANCE)
    result = tally(
        list(ballots),  # type: ignore[arg-type]
        requirements=needs,
        digest=RIGHT,
        requester_ids=REQUESTER,
        directory=DIRECTORY,
        deadline=DEADLINE,
    )
    return [c.principal for c in result.counted], [
        (r.ballot.identity.rsplit("/", 1)[-1], r.reason) for r in result.refused
    ]


def test_the_point_is_the_policys_share_of_the_window() -> None:
    opened = DEADLINE - timedelta(seconds=300)
    assert escalation_point(TO_FINANCE, opened_at=opened, deadline=DEADLINE) == DEADLINE - timedelta(seconds=60)
    assert escalation_point(ReminderPolicy((50,)), opened_at=opened, deadline=DEADLINE) is None


def test_an_escalation_group_member_counts_from_the_point_on_in_the_tally() -> None:
    assert _tally(vote("alice"), vote("erin", at=-61)) == (["alice"], [("erin", ReasonCode.NOT_ELIGIBLE)])
    assert _tally(vote("alice"), vote("erin", at=-60)) == (["alice", "erin"], [])
    # Every other rule still holds: frank (finance) may not approve tier high.
    assert _tally(vote("alice"), vote("frank", at=-30)) == (["alice"], [("frank", ReasonCode.TIER_NOT_ALLOWED)])
    # Without the escalation, erin is never eligible.
    result = tally(
        [vote("alice"), vote("erin", at=-30)],
        requirements=requirements(Tier.HIGH),
        digest=RIGHT,
        requester_ids=REQUESTER,
        directory=DIRECTORY,
        deadline=DEADLINE,
    )
    assert [r.reason for r in result.refused] == [ReasonCode.NOT_ELIGIBLE]


def test_rules_at_a_naive_time_keep_the_escalation_group_out() -> None:
    rules = ApproverRules.of(Tier.HIGH, ("manager",), ()).escalating(("finance",), DEADLINE)
    assert rules.at(DEADLINE).eligible_groups == frozenset({"manager", "finance"})
    assert rules.at(DEADLINE.replace(tzinfo=None)).eligible_groups == frozenset({"manager"})
    assert rules.at(DEADLINE - timedelta(seconds=1)).eligible_groups == frozenset({"manager"})


ESCALATING = replace(POLICY, reminders=ReminderPolicy((50,), 80, ("security",)))  # eligible: manager, compliance
CAROL = replace(_vote("carol", "security"), approver=_approver("carol", "security", groups=frozenset({"security"})))


def test_the_issuer_accepts_an_escalation_group_member_after_the_point_only() -> None:
    late = T0 + timedelta(minutes=48)
    quorum = _quorum(decided_at=late + timedelta(seconds=1))
    check_quorum(quorum, [ALICE, replace(CAROL, received_at=late)], ESCALATING)
    with pytest.raises(QuorumEvidenceError) as refused:
        check_quorum(quorum, [ALICE, replace(CAROL, received_at=late - timedelta(seconds=6))], ESCALATING)
    assert refused.value.code == ReasonCode.NOT_ELIGIBLE
    with pytest.raises(QuorumEvidenceError):  # no escalation in the policy: never
        check_quorum(quorum, [ALICE, replace(CAROL, received_at=late)], POLICY)


def test_the_issuer_places_the_point_in_approvals_capped_window() -> None:
    # Approvals capped the window at 100 s (ATB_MAX_PENDING_SECONDS): the point is at 80 s, not 48 min.
    at = T0 + timedelta(seconds=80)
    quorum = _quorum(decided_at=at + timedelta(seconds=1))
    with pytest.raises(QuorumEvidenceError):
        check_quorum(quorum, [ALICE, replace(CAROL, received_at=at)], ESCALATING)
    check_quorum(quorum, [ALICE, replace(CAROL, received_at=at)], ESCALATING, max_pending_seconds=100)
