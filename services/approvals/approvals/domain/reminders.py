"""Reminders and escalation of one open request, as a pure step of the approvals timer.

`on_reminder_tick` asks `contracts.reminders.due` what is due for an open request
that still lacks its quorum, and returns the events to publish (`ReminderDue`,
`ApprovalEscalated`), their audit notes (`approval_reminder_sent`,
`approval_escalated`) and the new counters to record in the request's state. The
service commits all of it in one transaction with the changelog record, so a
reminder is sent exactly once across restarts and instances.

Pure: the clock, the policy and the counters are inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from approvals.domain.directory import Directory
from approvals.domain.request_state import AuditNote, Step, requirements_of
from approvals.domain.tally import Ballot, tally
from contracts import ApprovalStateChanged, BallotRecord, EventPayload
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.reminders import ReminderPolicy, due

__all__ = ["ReminderStep", "on_reminder_tick", "reminder_step"]


@dataclass(frozen=True)
class ReminderStep:
    events: tuple[EventPayload, ...]
    audits: tuple[AuditNote, ...]
    reminders_sent: int
    escalated: bool


def on_reminder_tick(
    state: ApprovalStateChanged,
    policy: ReminderPolicy,
    *,
    reminders_sent: int,
    escalated: bool,
    directory: Directory,
    now: datetime,
) -> ReminderStep | None:
    """What to send for an open request at `now`, or None when nothing is due."""
    request, record, digest, deadline = state.request, state.requirements, state.digest, state.deadline
    if state.status != "open" or request is None or record is None or digest is None or deadline is None:
        return None
    if policy.empty:
        return None
    opened_at = deadline - timedelta(seconds=record.pending_seconds)
    what = due(
        policy, opened_at=opened_at, deadline=deadline, reminders_sent=reminders_sent, escalated=escalated, now=now
    )
    if not what.anything:
        return None
    result = tally(
        [_ballot(b) for b in state.ballots],
        requirements=requirements_of(record),
        digest=digest,
        requester_ids=(request.agent_id, request.leg.accountable_party.id),
        directory=directory,
        deadline=deadline,
    )
    events: list[EventPayload] = []
    audits: list[AuditNote] = []
    if what.reminder is not None:
        events.append(
            ReminderDue(
                request_id=state.request_id,
                tier=record.tier,
                reminder=what.reminder,
                of=what.of,
                missing=result.missing,
                eligible_groups=record.eligible_groups,
                request_digest=digest,
                deadline=deadline,
                sent_at=now,
            )
        )
        audits.append(
            AuditNote(
                "approval_reminder_sent",
                "info",
                f"reminder {what.reminder} of {what.of}: {result.missing} more approval(s) needed",
                {"reminder": what.reminder, "of": what.of, "missing": result.missing},
            )
        )
    if what.escalate:
        events.append(
            ApprovalEscalated(
                request_id=state.request_id,
                tier=record.tier,
                escalate_to=policy.escalate_to,
                missing=result.missing,
                request_digest=digest,
                deadline=deadline,
                escalated_at=now,
            )
        )
        audits.append(
            AuditNote(
                "approval_escalated",
                "info",
                f"quorum still missing: escalated to {', '.join(policy.escalate_to)}",
                {"escalate_to": list(policy.escalate_to), "missing": result.missing},
            )
        )
    return ReminderStep(
        tuple(events),
        tuple(audits),
        what.reminder if what.reminder is not None else reminders_sent,
        escalated or what.escalate,
    )


def reminder_step(state: ApprovalStateChanged, *, directory: Directory, now: datetime) -> Step | None:
    """`on_reminder_tick` with the request's own policy and counters: the next state records what was sent."""
    if state.requirements is None:
        return None
    step = on_reminder_tick(
        state,
        requirements_of(state.requirements).reminders,
        reminders_sent=state.reminders_sent,
        escalated=state.escalated,
        directory=directory,
        now=now,
    )
    if step is None:
        return None
    sent = state.model_copy(
        update={"reminders_sent": step.reminders_sent, "escalated": step.escalated, "updated_at": now}
    )
    return Step(sent, step.events, step.audits)


def _ballot(record: BallotRecord) -> Ballot:
    return Ballot(
        vote_id=record.vote_id,
        identity=record.identity,
        choice=record.choice,
        digest=record.digest,
        received_at=record.received_at,
        channel=record.channel,
        vote_event=record.vote_event,
    )
