"""A button click on an approval card → the vote to publish, or the reason there is none.

`decide_click` is a pure function of frozen values: the authenticated click, the
request's view, the approver directory, the chat tiers, what this approver
already voted through chat, and the clock. Signature checks and replay detection
happen before (in adapters); counting happens after (in the approvals service).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from chat.domain.eligibility import eligibility_refusal, slack_identity
from chat.domain.step_up import StepUp
from chat.domain.view import RequestView
from contracts import ReasonCode, Tier, VoteChoice
from contracts.directory import Directory
from contracts.justification import Justification, needs_reason

__all__ = ["CastVote", "Click", "ClickRefused", "decide_click", "decide_vote", "explain"]


@dataclass(frozen=True)
class Click:
    """An authenticated Slack block action on one of our cards."""

    user_id: str
    team_id: str
    request_id: str
    choice: VoteChoice
    trigger_id: str
    channel_id: str
    message_ts: str


@dataclass(frozen=True)
class CastVote:
    """Publish this vote: `approver_identity` is what the chat service attests (the Slack user)."""

    request_id: str
    approver_identity: str
    principal: str
    choice: VoteChoice
    request_digest: str


@dataclass(frozen=True)
class ClickRefused:
    """No vote: `code` is audited, `explain(code)` is what the user sees."""

    code: str
    principal: str | None = None


_EXPLANATIONS = {
    "unknown_request": "This approval request is unknown to ATB (or not yet known). Try again in a moment.",
    "request_closed": "This request is already resolved; votes no longer count.",
    "after_deadline": "The deadline of this request has passed.",
    "unknown_user": "Your Slack account is not in the ATB approver directory, so your vote cannot count.",
    "wrong_workspace": "Votes are accepted only from the configured Slack workspace.",
    "tier_requires_cli": "This tier cannot be approved from chat. Vote with your own identity: "
    "`atb vote <request-id> approve|deny --as <you>`.",
    "self_approval": "You are the accountable party (or the agent) of this request: you cannot approve it.",
    "tier_not_allowed": "You are not allowed to approve requests of this risk tier.",
    "not_eligible": "None of your approver groups is eligible for this request.",
    "duplicate": "You already voted on this request; your vote counts once.",
    "unknown_teams_user": "Your Microsoft Entra account is not in the ATB approver directory: your vote cannot count.",
    "wrong_tenant": "Votes are accepted only from the configured Microsoft Entra tenant.",
    "step_up_required": "Approvals of this tier carry your passkey: open the request in the ATB console "
    "(the card's Approve in the console button) and approve there.",
    "reason_required": "This vote needs a written reason: in Teams, write it in the card's reason field; "
    'from Slack, vote with `atb vote <request-id> approve|deny --as <you> --reason "..."`.',
}


def explain(code: str) -> str:
    return _EXPLANATIONS.get(code, f"Your vote was not recorded ({code}).")


def decide_click(
    click: Click,
    view: RequestView | None,
    directory: Directory,
    *,
    chat_tiers: Collection[Tier],
    already_voted: bool,
    now: datetime,
    team_id: str = "",
    step_up: StepUp | None = None,
) -> CastVote | ClickRefused:
    """The vote this click casts, or why it casts none (first failing rule wins)."""
    if team_id and click.team_id != team_id:
        return ClickRefused("wrong_workspace")
    return decide_vote(
        slack_identity(click.user_id),
        click.request_id,
        click.choice,
        view,
        directory,
        chat_tiers=chat_tiers,
        already_voted=already_voted,
        now=now,
        step_up=step_up,
    )


def decide_vote(
    identity: str,
    request_id: str,
    choice: VoteChoice,
    view: RequestView | None,
    directory: Directory,
    *,
    chat_tiers: Collection[Tier],
    already_voted: bool,
    now: datetime,
    unknown_user: str = "unknown_user",
    reason: str = "",
    step_up: StepUp | None = None,
) -> CastVote | ClickRefused:
    """The vote a chat user (`identity`, as the directory spells it) casts, or why none: Slack and Teams alike."""
    required = view.required if view is not None else None
    if view is None or required is None:
        return ClickRefused("unknown_request")
    if view.resolution is not None:
        return ClickRefused("request_closed")
    if now > required.deadline:
        return ClickRefused("after_deadline")
    approver = directory.resolve(identity)
    if approver is None:
        return ClickRefused(unknown_user)
    if choice is VoteChoice.APPROVE and step_up is not None and step_up.applies(required.tier):
        # Before eligibility: the console judges it there, with the passkey (critical included).
        return ClickRefused(ReasonCode.STEP_UP_REQUIRED, approver.principal)
    escalation = (view.escalation.groups, view.escalation.at) if view.escalation is not None else None
    refusal = eligibility_refusal(approver, required, directory, chat_tiers, escalation=escalation, at=now)
    if refusal is not None:
        return ClickRefused(refusal, approver.principal)
    if already_voted:
        return ClickRefused("duplicate", approver.principal)
    # A rule this code does not know asks for a reason (approvals would refuse the request's policy answer anyway).
    rule = Justification(view.justification) if view.justification in set(Justification) else Justification.BOTH
    if needs_reason(rule, choice) and not reason.strip():
        return ClickRefused("reason_required", approver.principal)  # approvals would refuse it too
    return CastVote(request_id, identity, approver.principal, choice, required.request_digest)
