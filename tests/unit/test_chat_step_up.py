"""Chat with the console's assurance (chat.domain.step_up): high and critical are approved with a passkey.

With a console configured, the Approve button of a high or critical card (Slack and Teams) opens the
request's page in the console, an approve click or action on such a card is refused (`step_up_required`)
whoever sends it, and Deny still works from chat. Without a console, the cards are as before.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from chat.adapters.interaction import parse_interaction
from chat.domain import (
    APPROVE_ACTION,
    STEP_UP_ACTION,
    CastVote,
    Click,
    ClickRefused,
    RequestView,
    StepUp,
    decide_click,
    render_adaptive_card,
    render_card,
)
from chat.domain.teams import APPROVE_VERB, DENY_VERB
from chat.settings import ChatSettings
from contracts import JsonObject, ReasonCode, Tier, VoteChoice
from tests.unit.test_chat_domain import CHAT_TIERS, DIRECTORY, NOW, _click, _texts, _view
from tests.unit.test_teams_card import _action

STEP_UP = StepUp("https://console.example", frozenset({Tier.HIGH, Tier.CRITICAL}))
LINK = "https://console.example/requests/req-1"


def _clicked(click: Click, view: RequestView, step_up: StepUp | None = STEP_UP) -> CastVote | ClickRefused:
    return decide_click(click, view, DIRECTORY, chat_tiers=CHAT_TIERS, already_voted=False, now=NOW, step_up=step_up)


def _buttons(blocks: tuple[JsonObject, ...]) -> list[JsonObject]:
    out: list[JsonObject] = []
    for block in blocks:
        elements = block.get("elements") if block.get("type") == "actions" else None
        if isinstance(elements, list):
            out.extend(e for e in elements if isinstance(e, dict))
    return out


def test_the_high_card_links_approve_to_the_console_and_keeps_deny() -> None:
    buttons = _buttons(render_card(_view(Tier.HIGH), DIRECTORY, CHAT_TIERS, STEP_UP).blocks)
    approve, deny = buttons
    assert approve["action_id"] == STEP_UP_ACTION
    assert approve["url"] == LINK
    assert deny["action_id"] != APPROVE_ACTION
    assert APPROVE_ACTION not in json.dumps(buttons)
    # A medium card is not a step-up tier: its Approve still votes from chat.
    medium = _buttons(render_card(_view(Tier.MEDIUM, groups=("manager",)), DIRECTORY, CHAT_TIERS, STEP_UP).blocks)
    assert medium[0]["action_id"] == APPROVE_ACTION
    # Without a console: the high card votes from chat, as before.
    assert _buttons(render_card(_view(Tier.HIGH), DIRECTORY, CHAT_TIERS).blocks)[0]["action_id"] == APPROVE_ACTION


def test_the_critical_card_gets_only_the_console_link() -> None:
    card = render_card(_view(Tier.CRITICAL, groups=("compliance",)), DIRECTORY, CHAT_TIERS, STEP_UP)
    (link,) = _buttons(card.blocks)
    assert (link["action_id"], link["url"]) == (STEP_UP_ACTION, LINK)
    assert "console" in _texts(card.blocks)


def test_an_approve_click_on_a_step_up_tier_is_refused_and_a_deny_counts() -> None:
    view = _view(Tier.HIGH)
    refused = _clicked(_click(), view)
    assert isinstance(refused, ClickRefused)
    assert refused.code == ReasonCode.STEP_UP_REQUIRED
    assert refused.principal == "alice"
    deny = _clicked(replace(_click(), choice=VoteChoice.DENY), view)
    assert isinstance(deny, CastVote)
    assert deny.choice is VoteChoice.DENY
    # Without a console the same approve is a vote.
    assert isinstance(_clicked(_click(), view, None), CastVote)


def test_the_link_buttons_click_is_read_as_an_approve_so_it_is_refused() -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": "UALICE01"},
        "team": {"id": "TATBDEV"},
        "trigger_id": "1.2.x",
        "container": {"channel_id": "C1", "message_ts": "1.1"},
        "actions": [{"action_id": STEP_UP_ACTION, "value": "req-1"}],
    }
    click = parse_interaction(f"payload={json.dumps(payload)}".encode())
    assert click.choice is VoteChoice.APPROVE
    refused = _clicked(click, _view())
    assert isinstance(refused, ClickRefused)
    assert refused.code == ReasonCode.STEP_UP_REQUIRED


def test_teams_opens_the_console_for_approve_and_refuses_an_execute_approve() -> None:
    card = render_adaptive_card(_view(Tier.HIGH), DIRECTORY, CHAT_TIERS, STEP_UP)
    actions = card["actions"]
    assert isinstance(actions, list)
    approve, deny = actions
    assert approve == {"type": "Action.OpenUrl", "title": "Approve in the console", "url": LINK}
    assert isinstance(deny, dict)
    assert deny["type"] == "Action.ShowCard"
    assert APPROVE_VERB not in json.dumps(card["actions"])
    assert DENY_VERB in json.dumps(card["actions"])
    critical = render_adaptive_card(_view(Tier.CRITICAL, groups=("compliance",)), DIRECTORY, CHAT_TIERS, STEP_UP)
    assert critical["actions"] == [approve]
    # A forged (or stale) Action.Execute approve on a high request is refused.
    refused = _decide_step_up(_action())
    assert isinstance(refused, ClickRefused)
    assert refused.code == ReasonCode.STEP_UP_REQUIRED
    assert isinstance(_decide_step_up(_action(verb=DENY_VERB, reason="wrong vendor")), CastVote)


def _decide_step_up(action: object) -> CastVote | ClickRefused:
    from chat.domain import decide_teams_action

    return decide_teams_action(
        action,  # type: ignore[arg-type]
        _view(),
        DIRECTORY,
        chat_tiers=CHAT_TIERS,
        already_voted=False,
        now=NOW,
        tenant_id="tenant-1",
        step_up=STEP_UP,
    )


@pytest.mark.parametrize(("url", "expected"), [("", None), ("https://console.example/", LINK)])
def test_the_setting_turns_it_on(url: str, expected: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATB_CONSOLE_URL", url)
    step_up = ChatSettings().step_up()
    assert (step_up.link("req-1") if step_up else None) == expected
    if step_up is not None:
        assert step_up.tiers == {Tier.HIGH, Tier.CRITICAL}
    assert _view().required is not None
    assert _view().required.deadline > NOW - timedelta(seconds=1)  # type: ignore[union-attr]
