"""contracts.justification: which votes need a reason, and the reason read from the signed vote itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contracts import VoteCast, VoteChoice, make_envelope
from contracts.justification import Justification, missing_reason, needs_reason, reason_of_vote


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
