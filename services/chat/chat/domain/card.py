"""The Block Kit approval card of one request, as a pure function of its view.

Shows who asks (agent, accountable party), the exact action and its parameters,
the tier, how many distinct approvers are needed, the deadline, the legal basis
(`leg`), the ticket for critical, the votes received so far and, once resolved,
how it ended. Approve / Deny buttons only while the request is open and its tier
may be approved from chat; otherwise the card says to use `atb vote`. For the
console's step-up tiers (chat.domain.step_up) Approve is a link to the request's
page in the console.

Everything that comes from the agent is escaped (Slack mrkdwn treats `<...>` as
links and mentions: an agent must not be able to write `<!channel>` into a card).
The tally here is for humans; the approvals service alone decides what counts.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from pydantic import JsonValue

from chat.domain.eligibility import eligibility_refusal, quorum_hint
from chat.domain.step_up import StepUp
from chat.domain.view import RequestView
from contracts import ApprovalRequired, JsonObject, Tier, VoteChoice
from contracts.directory import Approver, Directory
from contracts.requirements import composition_of

__all__ = ["APPROVE_ACTION", "DENY_ACTION", "STEP_UP_ACTION", "Card", "TallyView", "render_card", "tally_view"]

APPROVE_ACTION = "atb_approve"
DENY_ACTION = "atb_deny"
STEP_UP_ACTION = "atb_step_up"
"""The link button to the console: Slack still sends its click, which is read as an approve and refused
(`step_up_required`, audited), so no vote can come from it."""
_MAX_PARAMS = 2500  # a section's text may hold 3000 characters
_ICONS = {
    "approved": "✅ Approved",
    "issued": "✅ Approved, PoA issued",
    "denied": "⛔ Denied",
    "expired": "⌛ Expired",
}


@dataclass(frozen=True)
class Card:
    text: str
    """Fallback text (notifications, screen readers)."""
    blocks: tuple[JsonObject, ...]


@dataclass(frozen=True)
class TallyView:
    approvals: tuple[str, ...]
    denials: tuple[str, ...]
    required: int
    still_needed: str = ""
    """What the quorum lacks beyond the count, e.g. ``1 more from compliance`` (contracts.quorum); empty when met."""


def escape(text: str) -> str:
    """Slack's three control characters (api.slack.com: formatting, escaping text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def tally_view(view: RequestView, directory: Directory) -> TallyView:
    """Distinct principals who approved / denied the exact digest, eligible by the directory."""
    required = view.required
    if required is None:
        return TallyView((), (), 0)
    approvals: list[str] = []
    approvers: list[Approver] = []
    denials: list[str] = []
    every_tier = frozenset(Tier) - {Tier.LOW}
    for ballot in view.ballots:
        approver = directory.resolve(ballot.identity)
        if approver is None or ballot.digest != required.request_digest:
            continue
        if eligibility_refusal(approver, required, directory, every_tier) is not None:
            continue
        bucket = approvals if ballot.choice is VoteChoice.APPROVE else denials
        if approver.principal not in bucket:
            bucket.append(approver.principal)
            if bucket is approvals:
                approvers.append(approver)
    hint = quorum_hint(required, approvers)
    still_needed = "" if hint.satisfied or not any(s.kind != "total" for s in hint.shortfalls) else hint.describe()
    return TallyView(tuple(approvals), tuple(denials), required.required_approvals, still_needed)


def render_card(
    view: RequestView, directory: Directory, chat_tiers: Collection[Tier], step_up: StepUp | None = None
) -> Card:
    required = view.required
    if required is None:
        raise ValueError(f"request {view.request_id} has no ApprovalRequired: nothing to show")
    tally = tally_view(view, directory)
    blocks: list[JsonObject] = [
        {"type": "header", "text": _plain(f"Approval needed: {required.action} ({required.tier.value})")},
        {"type": "section", "fields": _fields(view, required)},
        _params_block(view),
        {"type": "context", "elements": [_mrkdwn(_tally_text(tally))]},
    ]
    blocks.extend(_footer(view, required, chat_tiers, step_up))
    status = _ICONS[view.resolution.kind] if view.resolution else "Pending"
    text = f"[{status}] {required.action} on {required.resource} (tier {required.tier.value}) — {view.request_id}"
    return Card(text=escape(text), blocks=tuple(blocks))


def _fields(view: RequestView, required: ApprovalRequired) -> list[JsonValue]:
    request = view.verified_request
    leg = request.leg if request is not None else None
    rows = [
        ("Agent", required.agent_id),
        ("Accountable party", required.accountable_party_id),
        ("Action", f"{required.action} on {required.resource}"),
        ("Tier", required.tier.value),
        ("Approvals required", _required_text(required)),
        ("Deadline", f"{required.deadline:%Y-%m-%d %H:%M:%S} UTC"),
        ("Legal basis", f"{leg.basis} {leg.ref} ({leg.jurisdiction})" if leg is not None else "(not yet known)"),
        ("Request", view.request_id),
    ]
    if required.ticket_required:
        rows.append(("Ticket", (leg.ticket_ref or "(missing)") if leg is not None else "(not yet known)"))
    return [_mrkdwn(f"*{name}*\n{escape(value)}") for name, value in rows]


def _required_text(required: ApprovalRequired) -> str:
    text = f"{required.required_approvals} distinct, of {', '.join(required.eligible_groups)}"
    composition = composition_of(required.composition)
    return f"{text}: {composition.describe()}" if not composition.empty else text


def _params_block(view: RequestView) -> JsonObject:
    request = view.verified_request
    if request is None:
        return {"type": "section", "text": _mrkdwn("*Parameters*\n(waiting for the request's details)")}
    shown = json.dumps(request.params, sort_keys=True, indent=1, ensure_ascii=False)
    if len(shown) > _MAX_PARAMS:
        shown = shown[:_MAX_PARAMS] + "\n… (truncated)"
    description = getattr(request.leg, "description", None) or ""
    purpose = f"\n_{escape(description)}_" if description else ""
    return {"type": "section", "text": _mrkdwn(f"*Parameters*{purpose}\n```{escape(shown)}```")}


def _tally_text(tally: TallyView) -> str:
    text = f"Approvals: *{len(tally.approvals)} of {tally.required}*"
    if tally.approvals:
        text += " — " + ", ".join(escape(p) for p in tally.approvals)
    if tally.still_needed:
        text += " · Still needed: " + escape(tally.still_needed)
    if tally.denials:
        text += " · Denied by " + ", ".join(escape(p) for p in tally.denials)
    return text


def _footer(
    view: RequestView, required: ApprovalRequired, chat_tiers: Collection[Tier], step_up: StepUp | None
) -> list[JsonObject]:
    if view.resolution is not None:
        resolution = view.resolution
        by = f" by {', '.join(resolution.approvers)}" if resolution.approvers else ""
        return [
            {
                "type": "section",
                "text": _mrkdwn(f"*{_ICONS[resolution.kind]}*{escape(by)}: {escape(resolution.detail)}"),
            }
        ]
    console: JsonObject | None = None
    if step_up is not None and step_up.applies(required.tier):
        console = {
            "type": "button",
            "action_id": STEP_UP_ACTION,
            "text": _plain("Approve in the console"),
            "style": "primary",
            "url": step_up.link(view.request_id),
            "value": view.request_id,
        }
    if required.tier not in chat_tiers:
        if console is not None:
            note = f"Tier *{required.tier.value}*: approve in the console with your passkey; deny with `atb vote`."
            return [
                {"type": "section", "text": _mrkdwn(escape(note))},
                {"type": "actions", "block_id": f"atb:{view.request_id}"[:255], "elements": [console]},
            ]
        command = f"atb vote {view.request_id} approve --as <you>"
        note = f"Tier *{required.tier.value}* cannot be approved from chat: `{command}`"
        return [{"type": "section", "text": _mrkdwn(escape(note))}]
    confirm: JsonObject = {
        "title": _plain("Deny this request?"),
        "text": _plain("One deny denies the request."),
        "confirm": _plain("Deny"),
        "deny": _plain("Cancel"),
    }
    approve: JsonObject = console or {
        "type": "button",
        "action_id": APPROVE_ACTION,
        "text": _plain("Approve"),
        "style": "primary",
        "value": view.request_id,
    }
    buttons: list[JsonValue] = [
        approve,
        {
            "type": "button",
            "action_id": DENY_ACTION,
            "text": _plain("Deny"),
            "style": "danger",
            "value": view.request_id,
            "confirm": confirm,
        },
    ]
    return [{"type": "actions", "block_id": f"atb:{view.request_id}"[:255], "elements": buttons}]


def _plain(text: str) -> JsonObject:
    return {"type": "plain_text", "text": text[:150]}


def _mrkdwn(text: str) -> JsonObject:
    return {"type": "mrkdwn", "text": text}
