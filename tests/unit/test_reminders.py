"""Reminders and escalation: the policy's shape, the schedule, and the approvals timer's step.

The step is driven by an explicit clock: each reminder and the escalation come
due once, are reported once the counters record them, and never after the
deadline or once the request is closed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from approvals.domain.reminders import on_reminder_tick
from contracts import (
    AccountableParty,
    ApprovalStateChanged,
    BallotRecord,
    IssuanceRequested,
    LegitimateInterest,
    Tier,
    VoteCast,
    VoteChoice,
    encode_envelope,
    make_envelope,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.directory import Directory
from contracts.errors import RequirementsError
from contracts.reminders import ReminderPolicy, due
from contracts.requirements import Requirements

ROOT = Path(__file__).resolve().parents[2]
OPENED = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
DEADLINE = OPENED + timedelta(hours=1)
HIGH = ReminderPolicy((50, 80), 80, ("security",))
DIRECTORY = Directory.from_mapping(json.loads((ROOT / "config" / "approvers.json").read_text(encoding="utf-8")))


def at(minutes: float) -> datetime:
    return OPENED + timedelta(minutes=minutes)


# -- the policy ------------------------------------------------------------------------------


def test_the_shipped_policy_data_parses() -> None:
    data = json.loads((ROOT / "opa" / "policy" / "data.json").read_text(encoding="utf-8"))["atb_policy"]
    policies = {tier: ReminderPolicy.from_json(value) for tier, value in data["reminders"].items()}
    assert policies["high"] == HIGH
    assert policies["medium"] == ReminderPolicy((50, 80))
    assert ReminderPolicy.from_json({}).empty


@pytest.mark.parametrize(
    "value",
    [
        {"remind_at": [80, 50]},
        {"remind_at": [50, 50]},
        {"remind_at": [100]},
        {"remind_at": [0]},
        {"remind_at": [0.5]},
        {"remind_at": [True]},
        {"remind_at": "50"},
        {"escalate_at": 50},
        {"escalate_to": ["security"]},
        {"escalate_at": 150, "escalate_to": ["security"]},
        {"escalate_at": 0.8, "escalate_to": ["security"]},
        {"escalate_at": 50, "escalate_to": [""]},
        {"remind_at": [10, 20, 30, 40, 50, 60]},
        {"remind_at": [50], "when": "later"},
        [50],
    ],
)
def test_a_malformed_policy_is_refused(value: object) -> None:
    with pytest.raises(RequirementsError):
        ReminderPolicy.from_json(value)  # type: ignore[arg-type]


# -- the schedule ----------------------------------------------------------------------------


def _due(now: datetime, sent: int = 0, escalated: bool = False) -> tuple[int | None, bool]:
    what = due(HIGH, opened_at=OPENED, deadline=DEADLINE, reminders_sent=sent, escalated=escalated, now=now)
    return what.reminder, what.escalate


def test_each_reminder_and_the_escalation_come_due_once() -> None:
    assert _due(at(29)) == (None, False)
    assert _due(at(30)) == (1, False)
    assert _due(at(31), sent=1) == (None, False)
    assert _due(at(48), sent=1) == (2, True)
    assert _due(at(50), sent=2, escalated=True) == (None, False)


def test_after_an_outage_only_the_latest_reminder_is_sent_and_none_after_the_deadline() -> None:
    assert _due(at(55)) == (2, True)  # reminder 1 is stale: 2 stands for both
    assert _due(at(61)) == (None, False)


# -- the approvals timer's step ----------------------------------------------------------------


def _state(*approvers: str) -> ApprovalStateChanged:
    request = IssuanceRequested(
        request_id="req-r",
        agent_id="spiffe://atb.local/agent/crm-bot",
        tenant="acme",
        action="iam.role.assign",
        resource="iam:role/x",
        leg=LegitimateInterest(
            ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-900")
        ),
        requested_at=OPENED,
    )
    digest = "sha256:" + "d" * 64
    requirements = Requirements(Tier.HIGH, 2, False, ("manager", "compliance", "security"), 3600, 120, "test-1")
    ballots = []
    for name in approvers:
        vote = VoteCast(
            request_id="req-r",
            vote_id=f"vote-{name}",
            approver_id=f"spiffe://atb.local/user/{name}",
            choice=VoteChoice.APPROVE,
            request_digest=digest,
            channel="cli",
            cast_at=OPENED,
        )
        text = encode_envelope(make_envelope(vote, source=vote.approver_id)).decode()
        ballots.append(
            BallotRecord(
                vote_id=vote.vote_id,
                identity=vote.approver_id,
                choice=VoteChoice.APPROVE,
                digest=digest,
                received_at=OPENED,
                channel="cli",
                vote_event=text,
            )
        )
    return ApprovalStateChanged(
        request_id="req-r",
        status="open",
        request=request,
        request_event="{}",
        requirements=requirements.record(),
        digest=digest,
        deadline=DEADLINE,
        ballots=tuple(ballots),
        updated_at=OPENED,
    )


def test_the_step_reminds_with_what_is_missing_then_escalates_once() -> None:
    state = _state("alice")
    assert on_reminder_tick(state, HIGH, reminders_sent=0, escalated=False, directory=DIRECTORY, now=at(10)) is None

    first = on_reminder_tick(state, HIGH, reminders_sent=0, escalated=False, directory=DIRECTORY, now=at(30))
    assert first is not None
    [reminder] = first.events
    assert isinstance(reminder, ReminderDue)
    assert (reminder.reminder, reminder.of, reminder.missing, reminder.sent_at) == (1, 2, 1, at(30))
    assert [(a.audit_type, a.outcome) for a in first.audits] == [("approval_reminder_sent", "info")]
    assert (first.reminders_sent, first.escalated) == (1, False)
    again = on_reminder_tick(state, HIGH, reminders_sent=1, escalated=False, directory=DIRECTORY, now=at(31))
    assert again is None

    second = on_reminder_tick(state, HIGH, reminders_sent=1, escalated=False, directory=DIRECTORY, now=at(48))
    assert second is not None
    assert [type(e) for e in second.events] == [ReminderDue, ApprovalEscalated]
    escalation = second.events[1]
    assert isinstance(escalation, ApprovalEscalated)
    assert (escalation.escalate_to, escalation.missing) == (("security",), 1)
    assert [a.audit_type for a in second.audits] == ["approval_reminder_sent", "approval_escalated"]
    assert (second.reminders_sent, second.escalated) == (2, True)
    assert on_reminder_tick(state, HIGH, reminders_sent=2, escalated=True, directory=DIRECTORY, now=at(59)) is None


def test_nothing_for_a_closed_request_or_after_the_deadline() -> None:
    closed = _state().model_copy(update={"status": "closed", "outcome": "denied"})
    assert on_reminder_tick(closed, HIGH, reminders_sent=0, escalated=False, directory=DIRECTORY, now=at(30)) is None
    assert on_reminder_tick(_state(), HIGH, reminders_sent=0, escalated=False, directory=DIRECTORY, now=at(61)) is None
    assert (
        on_reminder_tick(_state(), ReminderPolicy(), reminders_sent=0, escalated=False, directory=DIRECTORY, now=at(59))
        is None
    )
