"""Chat's eligibility hints for a quorum by groups: the card says which group is still missing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from chat.domain import RequestView, render_card, tally_view
from chat.domain.eligibility import quorum_hint
from contracts import BallotRecord, VoteChoice
from contracts.events import CompositionRecord, GroupCountRecord
from tests.unit.test_chat_domain import CHAT_TIERS, DIRECTORY, NOW, _required

COMPOSED = _required(party="emp-300").model_copy(  # dave (emp-200) may vote here
    update={
        "composition": CompositionRecord(
            all_of=(GroupCountRecord(group="manager", count=1), GroupCountRecord(group="compliance", count=1))
        )
    }
)


def _ballot(identity: str) -> BallotRecord:
    return BallotRecord(
        vote_id=f"v-{identity}",
        identity=identity,
        choice=VoteChoice.APPROVE,
        digest=COMPOSED.request_digest,
        received_at=NOW + timedelta(minutes=1),
        channel="cli",
        vote_event="{}",
    )


def _texts(view: RequestView) -> str:
    return repr(render_card(view, DIRECTORY, CHAT_TIERS).blocks)


def test_two_managers_leave_compliance_missing_on_the_card() -> None:
    view = RequestView("req-1", required=COMPOSED, ballots=(_ballot("alice"),))
    assert "1 manager + 1 compliance" in _texts(view)
    alone = tally_view(view, DIRECTORY)
    assert alone.still_needed == "1 more from compliance; 1 more distinct approver(s) needed"
    # dave is a second manager: two approvals, and still the same group missing.
    both = tally_view(replace(view, ballots=(_ballot("alice"), _ballot("dave"))), DIRECTORY)
    assert both.approvals == ("alice", "dave")
    assert both.still_needed == "1 more from compliance"
    assert "Still needed: 1 more from compliance" in _texts(replace(view, ballots=(_ballot("alice"), _ballot("dave"))))
    met = tally_view(replace(view, ballots=(_ballot("alice"), _ballot("bob"))), DIRECTORY)
    assert met.still_needed == ""


def test_without_a_composition_there_is_no_group_hint() -> None:
    view = RequestView("req-1", required=_required(), ballots=(_ballot("alice"),))
    assert tally_view(view, DIRECTORY).still_needed == ""
    assert "Still needed" not in _texts(view)


def test_the_hint_is_the_shared_assignment() -> None:
    alice, bob = DIRECTORY.resolve("alice"), DIRECTORY.resolve("bob")
    assert alice is not None
    assert bob is not None
    hint = quorum_hint(COMPOSED, [bob, alice])
    assert hint.satisfied
    assert (hint.group_of("alice"), hint.group_of("bob")) == ("manager", "compliance")
