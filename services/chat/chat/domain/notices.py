"""Direct messages to people: reminders, escalations and outcomes, per chat identity (pure).

The approvals service's timer publishes `ReminderDue` and `ApprovalEscalated`
exactly once per request and point; the chat service turns each into direct
messages, one per person and chat identity:

- a reminder goes to every approver who may approve the request (the rules
  approvals counts with, `contracts.eligibility`, every tier: the text tells
  the approver of a tier chat may not vote on to use ``atb vote``) and has not
  voted yet;
- an escalation goes to every member of the groups escalated to who is not the
  requester or its accountable party and has not voted yet (whether the policy
  also makes them eligible from that point on is `contracts.reminders`');
- an outcome (PoA issued, denied, expired) goes to the accountable party.

Each message has a `notice_id`, the same on every redelivery of the event
(`<kind>:<request>:<point>:<principal>:<identity>`): the service claims it in its
store before sending, so a redelivered or replayed event sends nothing twice.

The chat identities are the directory's ``slack:<user id>`` and
``teams:<Entra object id>``; a person with neither is not messaged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chat.domain.eligibility import SLACK_PREFIX, rules_for
from chat.domain.teams import TEAMS_PREFIX
from chat.domain.view import RequestView
from contracts import PoaIssued, RequestDenied, RequestExpired
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.directory import Approver, Directory, normalize

__all__ = ["Notice", "chat_targets", "escalation_notices", "outcome_notices", "reminder_notices"]


@dataclass(frozen=True)
class Notice:
    """One direct message to one person on one chat identity."""

    notice_id: str
    kind: str
    """``reminder``, ``escalation`` or ``outcome``."""
    request_id: str
    principal: str
    channel: str
    """``slack`` or ``teams``."""
    user: str
    """The Slack user id, or the Teams (Entra) object id."""
    text: str


def chat_targets(identities: Iterable[str]) -> list[tuple[str, str]]:
    """(channel, user) of each chat identity among `identities` (directory spellings, case-folded)."""
    slack, teams = normalize(SLACK_PREFIX), normalize(TEAMS_PREFIX)
    out: list[tuple[str, str]] = []
    for identity in sorted(identities):
        if identity.startswith(slack):
            out.append(("slack", identity[len(slack) :].upper()))  # Slack ids are upper-case alphanumerics
        elif identity.startswith(teams):
            out.append(("teams", identity[len(teams) :]))  # Entra object ids are lower-case GUIDs
    return out


def _voted(view: RequestView, directory: Directory) -> frozenset[str]:
    """The principals who voted on the request (as approvals recorded it)."""
    voted: set[str] = set()
    for ballot in view.ballots:
        approver = directory.resolve(ballot.identity)
        voted.add(normalize(approver.principal) if approver is not None else normalize(ballot.identity))
    return frozenset(voted)


def _notices(kind: str, point: str, request_id: str, people: Iterable[Approver], text: str) -> tuple[Notice, ...]:
    out: list[Notice] = []
    for person in people:
        for channel, user in chat_targets(person.identities):
            notice_id = f"{kind}:{request_id}:{point}:{person.principal}:{channel}:{user}"
            out.append(Notice(notice_id, kind, request_id, person.principal, channel, user, text))
    return tuple(out)


def _what(view: RequestView) -> str:
    request = view.request
    if request is None:
        return view.request_id
    return f"{view.request_id} ({request.action} on {request.resource}, for {request.agent_id})"


def reminder_notices(view: RequestView, event: ReminderDue, directory: Directory) -> tuple[Notice, ...]:
    """The reminder's direct messages: every eligible approver who has not voted yet."""
    if view.required is None or view.resolution is not None:
        return ()
    rules, voted = rules_for(view.required), _voted(view, directory)
    people = [a for a in directory.approvers if rules.refusal(a) is None and normalize(a.principal) not in voted]
    text = (
        f"Reminder {event.reminder} of {event.of}: request {_what(view)} (tier {event.tier.value}) still needs "
        f"{event.missing} approval(s) before {event.deadline:%Y-%m-%d %H:%M:%S %Z}. Vote on its card"
        f" or with `atb vote {event.request_id}`."
    )
    return _notices("reminder", str(event.reminder), event.request_id, people, text)


def escalation_notices(view: RequestView, event: ApprovalEscalated, directory: Directory) -> tuple[Notice, ...]:
    """The escalation's direct messages: every member of the groups escalated to who has not voted yet."""
    if view.required is None or view.resolution is not None:
        return ()
    rules, voted = rules_for(view.required), _voted(view, directory)
    groups = frozenset(event.escalate_to)
    people = [
        a
        for a in directory.approvers
        if not a.groups.isdisjoint(groups) and not rules.is_requester(a) and normalize(a.principal) not in voted
    ]
    text = (
        f"Escalated to {', '.join(event.escalate_to)}: request {_what(view)} (tier {event.tier.value}) still needs"
        f" {event.missing} approval(s) before {event.deadline:%Y-%m-%d %H:%M:%S %Z}. Vote on its card"
        f" or with `atb vote {event.request_id}`."
    )
    return _notices("escalation", "1", event.request_id, people, text)


def outcome_notices(
    view: RequestView, event: PoaIssued | RequestDenied | RequestExpired, directory: Directory
) -> tuple[Notice, ...]:
    """The outcome's direct message to the accountable party, where the directory has a chat id for them."""
    if view.required is None:
        return ()
    person = directory.resolve(view.required.accountable_party_id)
    if person is None:
        return ()
    match event:
        case PoaIssued():
            outcome, text = "issued", f"Request {_what(view)} was approved: its PoA is issued."
        case RequestDenied():
            outcome, text = "denied", f"Request {_what(view)} was denied ({event.code}): {event.reason}"
        case RequestExpired():
            outcome, text = "expired", f"Request {_what(view)} expired without its quorum."
    return _notices("outcome", outcome, event.request_id, [person], text)
