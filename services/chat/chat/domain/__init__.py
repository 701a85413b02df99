"""Pure rules of the chat service: request views, approval cards, click → vote decisions."""

from chat.domain.card import APPROVE_ACTION, DENY_ACTION, STEP_UP_ACTION, Card, TallyView, render_card, tally_view
from chat.domain.click import CastVote, Click, ClickRefused, decide_click, decide_vote, explain
from chat.domain.eligibility import eligible_slack_users, slack_identity
from chat.domain.step_up import StepUp
from chat.domain.teams import (
    TeamsAction,
    decide_teams_action,
    render_adaptive_card,
    teams_identity,
)
from chat.domain.view import RequestView, Resolution, evolve, request_id_of

__all__ = [
    "APPROVE_ACTION",
    "DENY_ACTION",
    "STEP_UP_ACTION",
    "Card",
    "CastVote",
    "Click",
    "ClickRefused",
    "RequestView",
    "Resolution",
    "StepUp",
    "TallyView",
    "TeamsAction",
    "decide_click",
    "decide_teams_action",
    "decide_vote",
    "eligible_slack_users",
    "evolve",
    "explain",
    "render_adaptive_card",
    "render_card",
    "request_id_of",
    "slack_identity",
    "tally_view",
    "teams_identity",
]
