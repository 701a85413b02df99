"""Microsoft Teams: the Adaptive Card of one request, and an `Action.Execute` → the vote, or why none.

Pure, as the Slack rules next to it: the card is a function of the request's view
(`render_adaptive_card`), the decision a function of the authenticated action,
the view, the directory, the chat tiers, the store's answer and the clock
(`decide_teams_action`). The bearer token, the replay check and the transport
are the adapters' (chat.adapters.teams_auth, chat.adapters.teams_connector).

The card says what the Slack card says (chat.domain.card): who asks, the exact
action and parameters, the tier, the quorum, the deadline, the legal basis, the
ticket, the votes so far and how it ended. Approve is an `Action.Execute`
(Universal Actions); Deny opens a reason field that must be filled
(`Input.Text`, `isRequired`), and the rule is enforced here too
(``reason_required``): a client that skips the card's validation gains nothing.
Agent-supplied text goes into `TextRun`s, which Teams never reads as markdown,
so an agent cannot write links or formatting into a card.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from pydantic import JsonValue

from chat.domain.card import tally_view
from chat.domain.click import CastVote, ClickRefused, decide_vote
from chat.domain.step_up import StepUp
from chat.domain.view import RequestView
from contracts import ApprovalRequired, JsonObject, Tier, VoteChoice
from contracts.directory import Directory
from contracts.justification import Justification
from contracts.requirements import composition_of

__all__ = [
    "APPROVE_VERB",
    "CARD_CONTENT_TYPE",
    "DENY_VERB",
    "REASON_INPUT",
    "REFRESH_VERB",
    "TEAMS_PREFIX",
    "TeamsAction",
    "decide_teams_action",
    "render_adaptive_card",
    "teams_identity",
]

TEAMS_PREFIX = "teams:"
"""Directory identities of Teams users: `teams:<Microsoft Entra object id>` (never a display name or a UPN)."""
APPROVE_VERB = "atb_approve"
DENY_VERB = "atb_deny"
REFRESH_VERB = "atb_refresh"
REASON_INPUT = "reason"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_REASON = 1000
_MAX_PARAMS = 2500
_STATUS = {
    "approved": "✅ Approved",
    "issued": "✅ Approved, PoA issued",
    "denied": "⛔ Denied",
    "expired": "⌛ Expired",
}


def teams_identity(aad_object_id: str) -> str:
    return f"{TEAMS_PREFIX}{aad_object_id}"


@dataclass(frozen=True)
class TeamsAction:
    """An authenticated `adaptiveCard/action` invoke on one of our cards."""

    activity_id: str
    aad_object_id: str
    tenant_id: str
    request_id: str
    verb: str
    reason: str
    conversation_id: str
    service_url: str
    reply_to_id: str = ""

    @property
    def choice(self) -> VoteChoice | None:
        return {APPROVE_VERB: VoteChoice.APPROVE, DENY_VERB: VoteChoice.DENY}.get(self.verb)


def decide_teams_action(
    action: TeamsAction,
    view: RequestView | None,
    directory: Directory,
    *,
    chat_tiers: Collection[Tier],
    already_voted: bool,
    now: datetime,
    tenant_id: str = "",
    step_up: StepUp | None = None,
) -> CastVote | ClickRefused:
    """The vote this action casts, or why it casts none (first failing rule wins)."""
    if tenant_id and action.tenant_id != tenant_id:
        return ClickRefused("wrong_tenant")
    choice = action.choice
    if choice is None:
        return ClickRefused("unknown_action")
    if choice is VoteChoice.DENY and not action.reason.strip():
        return ClickRefused("reason_required")
    return decide_vote(
        teams_identity(action.aad_object_id),
        action.request_id,
        choice,
        view,
        directory,
        chat_tiers=chat_tiers,
        already_voted=already_voted,
        now=now,
        reason=action.reason,
        step_up=step_up,
    )


def render_adaptive_card(
    view: RequestView, directory: Directory, chat_tiers: Collection[Tier], step_up: StepUp | None = None
) -> JsonObject:
    """The Adaptive Card (1.4, Universal Actions) of this request, as Teams shows it."""
    required = view.required
    if required is None:
        raise ValueError(f"request {view.request_id} has no ApprovalRequired: nothing to show")
    tally = tally_view(view, directory)
    status = _STATUS[view.resolution.kind] if view.resolution else "Pending"
    body: list[JsonValue] = [
        {
            "type": "TextBlock",
            "size": "Medium",
            "weight": "Bolder",
            "wrap": True,
            "text": "Approval needed",
        },
        _runs(("", f"{required.action} ({required.tier.value}) — {status}")),
        *(_runs((f"{name}: ", value)) for name, value in _fields(view, required)),
        _params(view),
        _runs(("Approvals: ", _tally_text(tally.approvals, tally.required, tally.still_needed, tally.denials))),
    ]
    card: JsonObject = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "fallbackText": f"[{status}] {required.action} on {required.resource} (tier {required.tier.value}) — "
        f"{view.request_id}",
        "body": body,
    }
    if view.resolution is not None:
        resolution = view.resolution
        by = f" by {', '.join(resolution.approvers)}" if resolution.approvers else ""
        body.append(_runs((f"{_STATUS[resolution.kind]}{by}: ", resolution.detail)))
        return card
    data: JsonObject = {"request_id": view.request_id}
    card["refresh"] = {"action": {"type": "Action.Execute", "verb": REFRESH_VERB, "data": data}}
    console: JsonObject | None = None
    if step_up is not None and step_up.applies(required.tier):
        # Approve opens the console's page: the vote there carries the approver's passkey (chat.domain.step_up).
        console = {"type": "Action.OpenUrl", "title": "Approve in the console", "url": step_up.link(view.request_id)}
    if required.tier not in chat_tiers:
        if console is not None:
            body.append(_runs(("", f'Deny with: atb vote {view.request_id} deny --as <you> --reason "..."')))
            card["actions"] = [console]
            return card
        note = f"Tier {required.tier.value} cannot be approved from chat: atb vote {view.request_id} approve --as <you>"
        body.append(_runs(("", note)))
        return card
    deny_card: JsonObject = {
        "type": "AdaptiveCard",
        "body": [
            {
                "type": "Input.Text",
                "id": REASON_INPUT,
                "label": "Why deny? (one deny denies the request)",
                "isMultiline": True,
                "isRequired": True,
                "maxLength": MAX_REASON,
                "errorMessage": "A deny needs a reason.",
            }
        ],
        "actions": [
            {
                "type": "Action.Execute",
                "title": "Deny",
                "verb": DENY_VERB,
                "style": "destructive",
                "data": data,
                "associatedInputs": "auto",
            }
        ],
    }
    approve: JsonObject = {
        "type": "Action.Execute",
        "title": "Approve",
        "verb": APPROVE_VERB,
        "style": "positive",
        "data": data,
        "associatedInputs": "none",
    }
    if view.justification in (Justification.APPROVE, Justification.BOTH):
        # The policy asks approvals of this tier for a reason too (contracts.justification).
        approve = {"type": "Action.ShowCard", "title": "Approve…", "card": _reasoned(approve, "Why approve?")}
    card["actions"] = [console or approve, {"type": "Action.ShowCard", "title": "Deny…", "card": deny_card}]
    return card


def _reasoned(action: JsonObject, label: str) -> JsonObject:
    """A card holding a required reason field and `action`, which sends it."""
    return {
        "type": "AdaptiveCard",
        "body": [
            {
                "type": "Input.Text",
                "id": REASON_INPUT,
                "label": label,
                "isMultiline": True,
                "isRequired": True,
                "maxLength": MAX_REASON,
                "errorMessage": "The policy asks for a reason.",
            }
        ],
        "actions": [{**action, "associatedInputs": "auto"}],
    }


def _fields(view: RequestView, required: ApprovalRequired) -> list[tuple[str, str]]:
    request = view.verified_request
    leg = request.leg if request is not None else None
    composition = composition_of(required.composition)
    quorum = f"{required.required_approvals} distinct, of {', '.join(required.eligible_groups)}"
    rows = [
        ("Agent", required.agent_id),
        ("Accountable party", required.accountable_party_id),
        ("Action", f"{required.action} on {required.resource}"),
        ("Tier", required.tier.value),
        ("Approvals required", f"{quorum}: {composition.describe()}" if not composition.empty else quorum),
        ("Deadline", f"{required.deadline:%Y-%m-%d %H:%M:%S} UTC"),
        ("Legal basis", f"{leg.basis} {leg.ref} ({leg.jurisdiction})" if leg is not None else "(not yet known)"),
        ("Request", view.request_id),
    ]
    if required.ticket_required:
        rows.append(("Ticket", (leg.ticket_ref or "(missing)") if leg is not None else "(not yet known)"))
    return rows


def _params(view: RequestView) -> JsonObject:
    request = view.verified_request
    if request is None:
        return _runs(("Parameters: ", "(waiting for the request's details)"))
    shown = json.dumps(request.params, sort_keys=True, indent=1, ensure_ascii=False)
    if len(shown) > _MAX_PARAMS:
        shown = shown[:_MAX_PARAMS] + "\n… (truncated)"
    description = getattr(request.leg, "description", None) or ""
    runs: list[JsonValue] = [{"type": "TextRun", "text": "Parameters", "weight": "Bolder"}]
    if description:
        runs.append({"type": "TextRun", "text": f"\n{description}", "italic": True})
    runs.append({"type": "TextRun", "text": f"\n{shown}", "fontType": "Monospace"})
    return {"type": "RichTextBlock", "inlines": runs}


def _tally_text(approvals: tuple[str, ...], required: int, still_needed: str, denials: tuple[str, ...]) -> str:
    text = f"{len(approvals)} of {required}"
    if approvals:
        text += " — " + ", ".join(approvals)
    if still_needed:
        text += " · Still needed: " + still_needed
    if denials:
        text += " · Denied by " + ", ".join(denials)
    return text


def _runs(*pairs: tuple[str, str]) -> JsonObject:
    """A RichTextBlock: each pair a bold label and a plain value, neither ever read as markdown."""
    inlines: list[JsonValue] = []
    for label, value in pairs:
        if label:
            inlines.append({"type": "TextRun", "text": label, "weight": "Bolder"})
        inlines.append({"type": "TextRun", "text": value})
    return {"type": "RichTextBlock", "inlines": inlines}
