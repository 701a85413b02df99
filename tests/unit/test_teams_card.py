"""The Teams Adaptive Card and the Action.Execute rules (chat.domain.teams): pure, table-driven."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from chat.domain import (
    CastVote,
    Click,
    ClickRefused,
    RequestView,
    TeamsAction,
    decide_click,
    decide_teams_action,
    evolve,
)
from chat.domain.teams import APPROVE_VERB, DENY_VERB, REFRESH_VERB, render_adaptive_card
from chat.domain.view import Resolution
from contracts import ApprovalStateChanged, BallotRecord, RequirementsRecord, Tier, VoteChoice
from tests.unit.test_chat_domain import CHAT_TIERS, DIRECTORY, NOW, REQUEST, _required, _view

ALICE, BOB, DAVE = (
    "a11ce000-0000-4000-8000-000000000001",
    "b0b00000-0000-4000-8000-000000000002",
    "da7e0000-0000-4000-8000-000000000004",
)
TENANT = "tenant-1"


def _action(aad: str = ALICE, verb: str = APPROVE_VERB, reason: str = "", tenant: str = TENANT) -> TeamsAction:
    return TeamsAction(
        activity_id="f:1",
        aad_object_id=aad,
        tenant_id=tenant,
        request_id="req-1",
        verb=verb,
        reason=reason,
        conversation_id="19:c",
        service_url="https://smba.example/",
    )


def _decide(action: TeamsAction, view: RequestView | None = None, **kw: object) -> CastVote | ClickRefused:
    return decide_teams_action(
        action,
        view if view is not None else _view(),
        DIRECTORY,
        chat_tiers=CHAT_TIERS,
        already_voted=bool(kw.get("voted", False)),
        now=NOW,
        tenant_id=TENANT,
    )


def _actions(card: Mapping[str, Any]) -> list[Any]:
    return list(card.get("actions", []))


def test_an_approve_is_a_vote_by_the_entra_object_id() -> None:
    vote = _decide(_action())
    assert isinstance(vote, CastVote)
    assert (vote.approver_identity, vote.principal, vote.choice) == (f"teams:{ALICE}", "alice", VoteChoice.APPROVE)


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (_action(verb=DENY_VERB), "reason_required"),
        (_action(verb=DENY_VERB, reason="   "), "reason_required"),
        (_action(tenant="other-tenant"), "wrong_tenant"),
        (_action(aad="00000000-0000-4000-8000-00000000dead"), "unknown_user"),
        (_action(aad=""), "unknown_user"),
        (_action(aad="alice"), "unknown_user"),  # a principal or a display name is not an object id
        (_action(aad=DAVE), "self_approval"),  # dave is the accountable party (emp-200)
        (_action(verb="atb_escalate"), "unknown_action"),
    ],
)
def test_refusals(action: TeamsAction, code: str) -> None:
    refused = _decide(action)
    assert isinstance(refused, ClickRefused)
    assert refused.code == code


def test_a_deny_with_a_reason_is_a_vote_and_a_second_vote_is_a_duplicate() -> None:
    vote = _decide(_action(aad=BOB, verb=DENY_VERB, reason="wrong vendor"))
    assert isinstance(vote, CastVote)
    assert vote.choice is VoteChoice.DENY
    again = _decide(_action(aad=BOB), voted=True)
    assert isinstance(again, ClickRefused)
    assert again.code == "duplicate"


def test_critical_is_not_approved_from_teams_and_its_card_has_no_buttons() -> None:
    view = _view(Tier.CRITICAL, groups=("security", "compliance"))
    refused = _decide(_action(aad=BOB), view)
    assert isinstance(refused, ClickRefused)
    assert refused.code == "tier_requires_cli"
    card = render_adaptive_card(view, DIRECTORY, CHAT_TIERS)
    assert _actions(card) == []
    assert "atb vote req-1 approve" in json.dumps(card)


def test_a_closed_request_and_late_votes() -> None:
    closed = replace(_view(), resolution=Resolution("denied", "denied by bob"))
    refused = _decide(_action(), closed)
    assert isinstance(refused, ClickRefused)
    assert refused.code == "request_closed"
    card = render_adaptive_card(closed, DIRECTORY, CHAT_TIERS)
    assert "actions" not in card
    assert "refresh" not in card
    assert "⛔ Denied" in json.dumps(card, ensure_ascii=False)
    late = decide_teams_action(
        _action(), _view(), DIRECTORY, chat_tiers=CHAT_TIERS, already_voted=False, now=NOW + timedelta(hours=1)
    )
    assert isinstance(late, ClickRefused)
    assert late.code == "after_deadline"


def test_the_open_card_approve_deny_with_a_required_reason_and_refresh() -> None:
    card = render_adaptive_card(_view(), DIRECTORY, CHAT_TIERS)
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    approve, deny = _actions(card)
    assert (approve["type"], approve["verb"], approve["data"]) == (
        "Action.Execute",
        APPROVE_VERB,
        {"request_id": "req-1"},
    )
    assert deny["type"] == "Action.ShowCard"
    inner = deny["card"]
    assert isinstance(inner, dict)
    [reason] = inner["body"]
    assert (reason["type"], reason["id"], reason["isRequired"]) == ("Input.Text", "reason", True)
    [execute] = inner["actions"]
    assert (execute["type"], execute["verb"]) == ("Action.Execute", DENY_VERB)
    assert card["refresh"] == {
        "action": {"type": "Action.Execute", "verb": REFRESH_VERB, "data": {"request_id": "req-1"}}
    }


def test_the_card_shows_the_request_and_counts_votes_as_they_arrive() -> None:
    view = evolve(_view(), ApprovalStateChanged(request_id="req-1", status="open", request=REQUEST, updated_at=NOW))
    assert view is not None
    shown = json.dumps(render_adaptive_card(view, DIRECTORY, CHAT_TIERS), ensure_ascii=False)
    for text in ("sap.payment.execute on sap:invoice/4711", "MSA-12345", "emp-200", "0 of 2", "120000"):
        assert text in shown
    ballot = BallotRecord(
        vote_id="v1",
        identity=f"teams:{ALICE}",
        choice=VoteChoice.APPROVE,
        digest=_required().request_digest,
        received_at=NOW,
        channel="teams",
        vote_event="{}",
    )
    voted = replace(view, ballots=(ballot,))
    assert "1 of 2 — alice" in json.dumps(render_adaptive_card(voted, DIRECTORY, CHAT_TIERS), ensure_ascii=False)


def test_agent_text_is_never_markdown() -> None:
    """Every text the agent controls sits in a TextRun (never read as markdown); TextBlocks hold only ours."""
    view = evolve(_view(), ApprovalStateChanged(request_id="req-1", status="open", request=REQUEST, updated_at=NOW))
    assert view is not None
    card = render_adaptive_card(view, DIRECTORY, CHAT_TIERS)
    blocks = [b for b in card["body"] if isinstance(b, dict)]  # type: ignore[union-attr]
    assert [b["text"] for b in blocks if b["type"] == "TextBlock"] == ["Approval needed"]
    assert "<!channel> pay now" in json.dumps(card)


def test_the_policys_justification_reaches_the_cards_and_the_chat_refusals() -> None:
    """Approvals enforces it; chat tells the user before publishing a vote approvals would refuse."""
    # The requirements come with the approvals changelog, not with ApprovalRequired.
    state = ApprovalStateChanged(
        request_id="req-1",
        status="open",
        request=REQUEST,
        updated_at=NOW,
        requirements=RequirementsRecord(
            tier=Tier.HIGH,
            approvals=2,
            ticket_required=False,
            eligible_groups=("manager", "compliance"),
            pending_seconds=600,
            poa_ttl_seconds=120,
            policy_version="test",
            justification="both",
        ),
    )
    view = evolve(_view(), state)
    assert view is not None
    assert view.justification == "both"
    refused = _decide(_action(), view)
    assert isinstance(refused, ClickRefused)
    assert (refused.code, refused.principal) == ("reason_required", "alice")
    assert isinstance(_decide(_action(reason="checked the invoice"), view), CastVote)
    slack = decide_click(
        Click("UALICE01", "TATBDEV", "req-1", VoteChoice.DENY, "t-1", "C1", "1.0"),
        view,
        DIRECTORY,
        chat_tiers=CHAT_TIERS,
        already_voted=False,
        now=NOW,
    )
    assert isinstance(slack, ClickRefused)
    assert slack.code == "reason_required"  # a Slack click carries no reason
    approve, _ = _actions(render_adaptive_card(view, DIRECTORY, CHAT_TIERS))
    assert approve["type"] == "Action.ShowCard"
    [field] = approve["card"]["body"]
    assert (field["id"], field["isRequired"]) == ("reason", True)
    assert approve["card"]["actions"][0]["verb"] == APPROVE_VERB
