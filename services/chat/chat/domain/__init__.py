"""Pure rules of the chat service: request views, approval cards, click → vote decisions."""

from chat.domain.card import APPROVE_ACTION, DENY_ACTION, Card, TallyView, render_card, tally_view
from chat.domain.click import CastVote, Click, ClickRefused, decide_click, explain
from chat.domain.eligibility import eligible_slack_users, slack_identity
from chat.domain.view import RequestView, Resolution, evolve, request_id_of

__all__ = [
    "APPROVE_ACTION",
    "DENY_ACTION",
    "Card",
    "CastVote",
    "Click",
    "ClickRefused",
    "RequestView",
    "Resolution",
    "TallyView",
    "decide_click",
    "eligible_slack_users",
    "evolve",
    "explain",
    "render_card",
    "request_id_of",
    "slack_identity",
    "tally_view",
]
