"""The chat service's pure rules: click → vote decisions, cards, views (table-driven)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chat.domain import (
    APPROVE_ACTION,
    CastVote,
    Click,
    ClickRefused,
    RequestView,
    decide_click,
    eligible_slack_users,
    evolve,
    render_card,
    tally_view,
)
from contracts import (
    AccountableParty,
    ApprovalRequired,
    ApprovalStateChanged,
    BallotRecord,
    ContractualNecessity,
    IssuanceRequested,
    RequestDenied,
    Tier,
    VoteChoice,
    digest_of,
)
from contracts.directory import Directory

NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
DIRECTORY = Directory.from_mapping(
    json.loads((Path(__file__).resolve().parents[2] / "config" / "approvers.json").read_text())
)
CHAT_TIERS = frozenset({Tier.MEDIUM, Tier.HIGH})
REQUEST = IssuanceRequested(
    request_id="req-1",
    agent_id="spiffe://atb.local/agent/finance-bot",
    tenant="acme",
    action="sap.payment.execute",
    resource="sap:invoice/4711",
    params={"amount_cents": 120000, "note": "<!channel> pay now"},
    leg=ContractualNecessity(
        ref="MSA-12345", jurisdiction="EU", accountable_party=AccountableParty(type="employee", id="emp-200")
    ),
    requested_at=NOW,
)


def _required(
    tier: Tier = Tier.HIGH, *, party: str = "emp-200", groups: tuple[str, ...] = ("manager", "compliance")
) -> ApprovalRequired:
    return ApprovalRequired(
        request_id="req-1",
        tier=tier,
        required_approvals=1 if tier is Tier.MEDIUM else 2,
        eligible_groups=groups,
        ticket_required=tier is Tier.CRITICAL,
        deadline=NOW + timedelta(minutes=10),
        request_digest=digest_of(REQUEST),
        agent_id=REQUEST.agent_id,
        action=REQUEST.action,
        resource=REQUEST.resource,
        accountable_party_id=party,
    )


def _view(tier: Tier = Tier.HIGH, **kwargs: object) -> RequestView:
    view = evolve(None, _required(tier, **kwargs))  # type: ignore[arg-type]
    assert view is not None
    return view


def _click(user: str = "UALICE01", team: str = "TATBDEV") -> Click:
    return Click(user, team, "req-1", VoteChoice.APPROVE, "1.2.x", "C1", "1.1")


@pytest.mark.parametrize(
    ("user", "view", "voted", "now", "expected"),
    [
        ("UALICE01", _view(), False, NOW, "vote"),
        ("UBOB0002", _view(), False, NOW, "vote"),
        ("UNOBODY9", _view(), False, NOW, "unknown_user"),
        ("UDAVE004", _view(), False, NOW, "self_approval"),  # dave is emp-200, the accountable party
        ("UALICE01", _view(Tier.CRITICAL, groups=("manager",)), False, NOW, "tier_requires_cli"),
        ("UCAROL03", _view(groups=("manager", "compliance")), False, NOW, "not_eligible"),  # carol: security
        ("UALICE01", _view(), True, NOW, "duplicate"),
        ("UALICE01", _view(), False, NOW + timedelta(minutes=11), "after_deadline"),
        ("UALICE01", None, False, NOW, "unknown_request"),
        ("UALICE01", RequestView("req-1"), False, NOW, "unknown_request"),
        (
            "UALICE01",
            evolve(_view(), RequestDenied(request_id="req-1", code="x", reason="r", denied_by="b", decided_at=NOW)),
            False,
            NOW,
            "request_closed",
        ),
    ],
)
def test_decide_click(user: str, view: RequestView | None, voted: bool, now: datetime, expected: str) -> None:
    decision = decide_click(_click(user), view, DIRECTORY, chat_tiers=CHAT_TIERS, already_voted=voted, now=now)
    if expected == "vote":
        assert isinstance(decision, CastVote)
        assert decision.approver_identity == f"slack:{user}"
        assert decision.request_digest == digest_of(REQUEST)
    else:
        assert isinstance(decision, ClickRefused)
        assert decision.code == expected


def test_a_tier_the_approver_may_not_approve_is_refused() -> None:
    # alice may approve medium and high only; chat allows critical here, the directory does not.
    decision = decide_click(
        _click(),
        _view(Tier.CRITICAL, groups=("manager",)),
        DIRECTORY,
        chat_tiers=frozenset(Tier),
        already_voted=False,
        now=NOW,
    )
    assert decision == ClickRefused("tier_not_allowed", "alice")


def test_a_click_from_another_workspace_is_refused() -> None:
    decision = decide_click(
        _click(team="TOTHER"),
        _view(),
        DIRECTORY,
        chat_tiers=CHAT_TIERS,
        already_voted=False,
        now=NOW,
        team_id="TATBDEV",
    )
    assert decision == ClickRefused("wrong_workspace")


def test_direct_messages_go_to_eligible_approvers_but_never_the_requester() -> None:
    assert eligible_slack_users(_required(), DIRECTORY) == ("UALICE01", "UBOB0002")
    assert eligible_slack_users(_required(Tier.MEDIUM, party="emp-300"), DIRECTORY) == (
        "UALICE01",
        "UBOB0002",
        "UDAVE004",
    )


def _texts(blocks: object) -> str:
    return json.dumps(blocks)


def test_the_card_shows_the_request_and_escapes_what_the_agent_wrote() -> None:
    view = evolve(_view(), ApprovalStateChanged(request_id="req-1", status="open", request=REQUEST, updated_at=NOW))
    assert view is not None
    card = render_card(view, DIRECTORY, CHAT_TIERS)
    shown = _texts(card.blocks)
    for expected in (
        "finance-bot",
        "emp-200",
        "sap.payment.execute",
        "high",
        "CONTRACT MSA-12345",
        "amount_cents",
        "2 distinct",
        "2026-01-15 10:10:00 UTC",
    ):
        assert expected in shown
    assert "<!channel>" not in shown
    assert "&lt;!channel&gt;" in shown
    assert APPROVE_ACTION in shown


def test_parameters_that_do_not_match_the_digest_are_not_shown() -> None:
    other = REQUEST.model_copy(update={"params": {"amount_cents": 1}})
    view = evolve(_view(), ApprovalStateChanged(request_id="req-1", status="open", request=other, updated_at=NOW))
    assert view is not None
    assert "waiting for the request's details" in _texts(render_card(view, DIRECTORY, CHAT_TIERS).blocks)


def test_a_critical_card_has_no_buttons_and_points_to_atb_vote() -> None:
    card = render_card(_view(Tier.CRITICAL, groups=("compliance",)), DIRECTORY, CHAT_TIERS)
    shown = _texts(card.blocks)
    assert APPROVE_ACTION not in shown
    assert "atb vote req-1 approve" in shown
    assert "Ticket" in shown


def _ballot(identity: str, choice: VoteChoice = VoteChoice.APPROVE, digest: str | None = None) -> BallotRecord:
    return BallotRecord(
        vote_id=identity,
        identity=identity,
        choice=choice,
        digest=digest or digest_of(REQUEST),
        received_at=NOW,
        channel="slack",
        vote_event="{}",
    )


def test_the_tally_counts_distinct_eligible_people_only() -> None:
    ballots = (
        _ballot("slack:UALICE01"),
        _ballot("spiffe://atb.local/user/alice"),  # alice again, through her SVID
        _ballot("slack:UDAVE004"),  # the accountable party
        _ballot("slack:UBOB0002", digest="sha256:" + "0" * 64),  # another request
        _ballot("slack:UNOBODY9"),
    )
    view = evolve(_view(), ApprovalStateChanged(request_id="req-1", status="open", ballots=ballots, updated_at=NOW))
    assert view is not None
    tally = tally_view(view, DIRECTORY)
    assert tally.approvals == ("alice",)
    assert "1 of 2" in _texts(render_card(view, DIRECTORY, CHAT_TIERS).blocks)


def test_a_resolved_card_loses_its_buttons_and_says_how_it_ended() -> None:
    denied = RequestDenied(request_id="req-1", code="denied_by_vote", reason="no", denied_by="bob", decided_at=NOW)
    view = evolve(_view(), denied)
    assert view is not None
    shown = _texts(render_card(view, DIRECTORY, CHAT_TIERS).blocks)
    assert "Denied" in shown
    assert APPROVE_ACTION not in shown


def test_views_ignore_events_about_nothing_they_follow() -> None:
    assert evolve(None, REQUEST) is None


def test_a_member_of_an_escalation_group_may_vote_in_chat_from_the_escalation_point_on() -> None:
    from dataclasses import replace

    from chat.domain.view import Escalation

    # carol (security) is not eligible for this request; the request escalates to security at NOW + 8 min.
    view = replace(
        _view(groups=("manager", "compliance")), escalation=Escalation(("security",), NOW + timedelta(minutes=8))
    )

    def carol(now: datetime) -> CastVote | ClickRefused:
        return decide_click(_click("UCAROL03"), view, DIRECTORY, chat_tiers=CHAT_TIERS, already_voted=False, now=now)

    assert carol(NOW + timedelta(minutes=7)) == ClickRefused("not_eligible", "carol")
    assert isinstance(carol(NOW + timedelta(minutes=8)), CastVote)
    # The accountable party stays refused, escalation or not.
    dave = decide_click(
        _click("UDAVE004"), view, DIRECTORY, chat_tiers=CHAT_TIERS, already_voted=False, now=NOW + timedelta(minutes=9)
    )
    assert isinstance(dave, ClickRefused)
    assert dave.code == "self_approval"
