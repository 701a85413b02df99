"""Justification: which votes need a reason (contracts.justification), and the approvals tally refusing one without."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import JsonValue

from approvals.domain.tally import Ballot, TallyResult, tally
from contracts import Tier, VoteCast, VoteChoice, make_envelope
from contracts.directory import Approver, Directory
from contracts.errors import RequirementsError
from contracts.justification import Justification, missing_reason, needs_reason, reason_of_vote
from contracts.reasons import ReasonCode
from contracts.requirements import Requirements


def _vote(choice: VoteChoice, reason: str) -> str:
    vote = VoteCast(
        request_id="req-1",
        vote_id="v-1",
        approver_id="spiffe://atb.local/user/alice",
        choice=choice,
        request_digest="sha256:" + "a" * 64,
        channel="cli",
        cast_at=datetime(2026, 1, 1, tzinfo=UTC),
        reason=reason,
    )
    # Unsigned here: the reason is read from evidence approvals already verified.
    return make_envelope(vote, source="spiffe://atb.local/user/alice").model_dump_json()


@pytest.mark.parametrize(
    ("rule", "approve", "deny"),
    [
        (Justification.NONE, False, False),
        (Justification.APPROVE, True, False),
        (Justification.DENY, False, True),
        (Justification.BOTH, True, True),
    ],
)
def test_which_votes_need_a_reason(rule: Justification, approve: bool, deny: bool) -> None:
    assert (needs_reason(rule, VoteChoice.APPROVE), needs_reason(rule, VoteChoice.DENY)) == (approve, deny)


def test_the_reason_is_read_from_the_signed_vote() -> None:
    assert reason_of_vote(_vote(VoteChoice.DENY, "wrong vendor")) == "wrong vendor"
    assert reason_of_vote(_vote(VoteChoice.DENY, "")) == ""
    assert reason_of_vote("not an envelope") == ""
    assert reason_of_vote("") == ""


@pytest.mark.parametrize("blank", ["", " ", "\n\t "])
def test_a_blank_reason_is_no_reason(blank: str) -> None:
    assert missing_reason(Justification.DENY, VoteChoice.DENY, _vote(VoteChoice.DENY, blank))
    assert not missing_reason(Justification.DENY, VoteChoice.APPROVE, _vote(VoteChoice.APPROVE, blank))
    assert not missing_reason(Justification.BOTH, VoteChoice.APPROVE, _vote(VoteChoice.APPROVE, "CHG-1 approved"))


# -- the approvals tally enforces it ------------------------------------------------------------

DEADLINE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
ELIGIBLE = ("manager", "compliance", "security")
TALLY_DIRECTORY = Directory(
    tuple(
        Approver(
            name,
            group,
            frozenset({group}),
            frozenset({Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL}),
            frozenset({f"spiffe://atb.local/user/{name}"}),
        )
        for name, group in (("alice", "manager"), ("bob", "compliance"), ("carol", "security"))
    )
)


def _ballot(who: str, choice: VoteChoice, reason: str) -> Ballot:
    identity = f"spiffe://atb.local/user/{who}"
    vote = VoteCast(
        request_id="req-1",
        vote_id=f"v-{who}",
        approver_id=identity,
        choice=choice,
        request_digest=DIGEST,
        channel="cli",
        cast_at=DEADLINE - timedelta(minutes=1),
        reason=reason,
    )
    return Ballot(
        vote_id=f"v-{who}",
        identity=identity,
        choice=choice,
        digest=DIGEST,
        received_at=DEADLINE - timedelta(minutes=1),
        channel="cli",
        vote_event=make_envelope(vote, source=identity).model_dump_json(),
    )


def _tally(tier: Tier, rule: Justification, *ballots: Ballot) -> TallyResult:
    requirements = Requirements(tier, 2, tier is Tier.CRITICAL, ELIGIBLE, 300, 60, "test-1", justification=rule)
    return tally(
        ballots,
        requirements=requirements,
        digest=DIGEST,
        requester_ids=("spiffe://atb.local/agent/x", "emp-1"),
        directory=TALLY_DIRECTORY,
        deadline=DEADLINE,
    )


def test_a_deny_without_a_reason_is_refused_when_the_tier_asks_for_one() -> None:
    result = _tally(Tier.HIGH, Justification.DENY, _ballot("alice", VoteChoice.DENY, " "))
    assert result.denied_by is None
    assert [(r.ballot.vote_id, r.reason) for r in result.refused] == [("v-alice", ReasonCode.REASON_REQUIRED)]
    denied = _tally(Tier.HIGH, Justification.DENY, _ballot("alice", VoteChoice.DENY, "wrong vendor"))
    assert denied.denied_by is not None
    assert denied.denied_by.principal == "alice"


def test_both_asks_approvals_for_a_reason_too_and_none_asks_nothing() -> None:
    bare = (_ballot("bob", VoteChoice.APPROVE, ""), _ballot("carol", VoteChoice.APPROVE, "CHG-1 checked"))
    both = _tally(Tier.CRITICAL, Justification.BOTH, *bare)
    assert not both.verified
    assert [r.reason for r in both.refused] == [ReasonCode.REASON_REQUIRED]
    assert [c.principal for c in both.counted] == ["carol"]
    free = _tally(Tier.CRITICAL, Justification.NONE, *bare)
    assert free.verified
    assert free.refused == ()


def test_the_requirement_survives_the_changelog_record_and_comes_from_the_policy_answer() -> None:
    answer: dict[str, JsonValue] = {
        "tier": "high",
        "approvals": 2,
        "ticket_required": False,
        "eligible_groups": list(ELIGIBLE),
        "pending_seconds": 300,
        "poa_ttl_seconds": 60,
        "policy_version": "test-1",
        "justification": "deny",
    }
    parsed = Requirements.from_policy(answer)
    assert parsed.justification is Justification.DENY
    assert Requirements.from_record(parsed.record()).justification is Justification.DENY
    without: dict[str, JsonValue] = {k: v for k, v in answer.items() if k != "justification"}
    assert Requirements.from_policy(without).justification is Justification.NONE
    with pytest.raises(RequirementsError):
        Requirements.from_policy({**answer, "justification": "sometimes"})
