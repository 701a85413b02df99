"""What the chat service knows about one request, folded from the events it follows.

`evolve(view, event) -> view` is the only way a view changes. Inputs are the
approvals service's outcomes (ApprovalRequired, QuorumReached, RequestDenied,
RequestExpired), its changelog (ApprovalStateChanged: the request's details and
the ballots received so far) and PoaIssued. Pure: no I/O, no clock reads.

A view is shown in Slack only once its ApprovalRequired is known; the request's
parameters are shown only when their digest is the one approvals asks votes for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from contracts import (
    ApprovalRequired,
    ApprovalStateChanged,
    BallotRecord,
    EventPayload,
    IssuanceRequested,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    digest_binds,
)
from contracts.reminders import ReminderPolicy, escalation_point

__all__ = ["Escalation", "RequestView", "Resolution", "ResolutionKind", "evolve", "request_id_of"]

ResolutionKind = Literal["approved", "issued", "denied", "expired"]


@dataclass(frozen=True)
class Resolution:
    """How a request ended, as far as the card needs to say."""

    kind: ResolutionKind
    detail: str
    approvers: tuple[str, ...] = ()
    at: datetime | None = None


@dataclass(frozen=True)
class Escalation:
    """Members of `groups` may approve votes received from `at` on (as approvals and the issuer judge them)."""

    groups: tuple[str, ...]
    at: datetime


@dataclass(frozen=True)
class RequestView:
    request_id: str
    required: ApprovalRequired | None = None
    request: IssuanceRequested | None = None
    ballots: tuple[BallotRecord, ...] = ()
    resolution: Resolution | None = None
    justification: str = "none"
    """Which votes need a written reason (the requirements in the approvals changelog; contracts.justification)."""
    escalation: Escalation | None = None
    """The groups the request escalates to and from when they may approve (the approvals changelog's
    requirements and deadline; contracts.reminders.escalation_point)."""

    @property
    def shown(self) -> bool:
        """Whether this request gets a card: humans were asked to approve it."""
        return self.required is not None

    @property
    def verified_request(self) -> IssuanceRequested | None:
        """The request's details, only if they hash to the digest votes bind to."""
        if self.request is None or self.required is None:
            return None
        return self.request if digest_binds(self.request, self.required.request_digest, at=None) else None


_Followed = ApprovalRequired | ApprovalStateChanged | QuorumReached | RequestDenied | RequestExpired | PoaIssued


def request_id_of(event: EventPayload) -> str | None:
    """The request an event is about, if it is one the chat service follows."""
    return event.request_id if isinstance(event, _Followed) else None


def evolve(view: RequestView | None, event: EventPayload) -> RequestView | None:
    """The view after `event`; events the chat service does not follow change nothing."""
    if not isinstance(event, _Followed):
        return view
    current = view or RequestView(request_id=event.request_id)
    match event:
        case ApprovalRequired():
            return replace(current, required=event)
        case ApprovalStateChanged():
            justification = event.requirements.justification if event.requirements else current.justification
            return replace(
                current,
                request=event.request or current.request,
                ballots=event.ballots,
                justification=justification,
                escalation=_escalation(event) or current.escalation,
            )
        case QuorumReached():
            approvers = tuple(v.approver_id for v in event.votes)
            resolution = Resolution("approved", "quorum reached", approvers, event.decided_at)
            return replace(
                current, request=current.request or event.request, resolution=_keep_issued(current, resolution)
            )
        case RequestDenied():
            detail = f"{event.code}: {event.reason} (by {event.denied_by})"
            return replace(current, resolution=Resolution("denied", detail, (), event.decided_at))
        case RequestExpired():
            detail = f"{event.approvals_counted} of {event.required_approvals} approvals before the deadline"
            return replace(current, resolution=Resolution("expired", detail, (), event.deadline))
        case PoaIssued():
            approvers = current.resolution.approvers if current.resolution else ()
            detail = f"PoA {event.jti} valid until {event.expires_at:%H:%M:%S} UTC"
            return replace(current, resolution=Resolution("issued", detail, approvers, event.issued_at))
    return current  # pragma: no cover - the match is exhaustive over _Followed


def _escalation(state: ApprovalStateChanged) -> Escalation | None:
    record, deadline = state.requirements, state.deadline
    if record is None or deadline is None:
        return None
    policy = ReminderPolicy(record.reminders.remind_at, record.reminders.escalate_at, record.reminders.escalate_to)
    point = escalation_point(policy, opened_at=deadline - timedelta(seconds=record.pending_seconds), deadline=deadline)
    return None if point is None else Escalation(policy.escalate_to, point)


def _keep_issued(current: RequestView, resolution: Resolution) -> Resolution:
    """A redelivered QuorumReached must not turn an issued card back into 'approved'."""
    if current.resolution is not None and current.resolution.kind == "issued":
        return replace(current.resolution, approvers=resolution.approvers or current.resolution.approvers)
    return resolution
