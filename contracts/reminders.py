"""Reminders and escalation of a pending request: the per-tier policy and when each is due.

The policy (`data.atb_policy.reminders.<tier>`, answered with the requirements as
``reminders``) says when to remind the approvers, as fractions of the pending
window in percent (``remind_at: [50, 80]``), and whom to escalate to if the
quorum is still missing at a point (``escalate_at: 80``,
``escalate_to: ["security"]``). A tier it does not name has neither.

`due` is the one schedule: given what was already sent (kept in the approvals
service's changelog), it says what is due now. After an outage only the latest
reminder that came due is sent (no burst of stale reminders), and the escalation
at most once. Exactly once is the approvals service's transactional processor's:
the effect and the state that records it are committed together.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import JsonValue

from contracts.errors import RequirementsError

__all__ = ["MAX_REMINDERS", "Due", "ReminderPolicy", "due", "escalation_point"]

MAX_REMINDERS = 5


@dataclass(frozen=True)
class ReminderPolicy:
    remind_at: tuple[int, ...] = ()
    """Percent of the pending window, strictly increasing, from 1 to 99 (integers: canonical JSON has no floats)."""
    escalate_at: int | None = None
    escalate_to: tuple[str, ...] = ()
    """The groups told (and asked) when the quorum is still missing at `escalate_at`."""

    def __post_init__(self) -> None:
        points = list(self.remind_at)
        if len(points) > MAX_REMINDERS:
            raise RequirementsError(f"reminders: at most {MAX_REMINDERS} per request")
        if any(isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 100 for p in points):
            raise RequirementsError("reminders: remind_at holds percents of the pending window, each from 1 to 99")
        if points != sorted(set(points)):
            raise RequirementsError("reminders: remind_at must be strictly increasing")
        if (self.escalate_at is None) != (not self.escalate_to):
            raise RequirementsError("reminders: escalate_at and escalate_to go together")
        if self.escalate_at is not None and (
            isinstance(self.escalate_at, bool)
            or not isinstance(self.escalate_at, int)
            or not 0 < self.escalate_at < 100
        ):
            raise RequirementsError("reminders: escalate_at is a percent of the pending window, from 1 to 99")
        if any(not isinstance(g, str) or not g.strip() for g in self.escalate_to):
            raise RequirementsError("reminders: escalate_to holds group names")

    @classmethod
    def from_json(cls, value: JsonValue) -> ReminderPolicy:
        """Parse ``{"remind_at": [...], "escalate_at": f, "escalate_to": [...]}``; None or ``{}``: nothing."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise RequirementsError(f"reminders must be an object, not {type(value).__name__}")
        unknown = sorted(set(value) - {"remind_at", "escalate_at", "escalate_to"})
        if unknown:
            raise RequirementsError(f"reminders: unknown field(s) {', '.join(unknown)}")
        remind_at, escalate_at, escalate_to = (
            value.get("remind_at", []),
            value.get("escalate_at"),
            value.get("escalate_to", []),
        )
        if not isinstance(remind_at, list) or not isinstance(escalate_to, list):
            raise RequirementsError("reminders: remind_at and escalate_to are lists")
        if escalate_at is not None and (isinstance(escalate_at, bool) or not isinstance(escalate_at, int)):
            raise RequirementsError("reminders: escalate_at is an integer percent")
        return cls(
            tuple(remind_at),  # type: ignore[arg-type]  # checked in __post_init__
            escalate_at,
            tuple(escalate_to),  # type: ignore[arg-type]
        )

    @property
    def empty(self) -> bool:
        return not self.remind_at and self.escalate_at is None


@dataclass(frozen=True)
class Due:
    """What is due now: the reminder to send (1-based, of `of`), and whether to escalate."""

    reminder: int | None
    of: int
    escalate: bool

    @property
    def anything(self) -> bool:
        return self.reminder is not None or self.escalate


def _at(opened_at: datetime, deadline: datetime, percent: int) -> datetime:
    return opened_at + (deadline - opened_at) * percent / 100


def due(
    policy: ReminderPolicy,
    *,
    opened_at: datetime,
    deadline: datetime,
    reminders_sent: int,
    escalated: bool,
    now: datetime,
) -> Due:
    """The reminder and escalation due at `now` that were not sent yet (none once the deadline passed).

    `reminders_sent` counts the reminder points already passed (sent, or skipped as stale);
    the caller records the returned `reminder` as the new count.
    """
    of = len(policy.remind_at)
    if now > deadline:
        return Due(None, of, False)
    passed = sum(1 for f in policy.remind_at if _at(opened_at, deadline, f) <= now)
    reminder = passed if passed > reminders_sent else None
    escalate = not escalated and policy.escalate_at is not None and _at(opened_at, deadline, policy.escalate_at) <= now
    return Due(reminder, of, escalate)


def escalation_point(policy: ReminderPolicy, *, opened_at: datetime, deadline: datetime) -> datetime | None:
    """When the escalation groups become eligible (the escalation point), or None without escalation.

    The escalation is sent at this point only if the quorum is still missing; a
    request that reached it before is closed, so "eligible from the point on" and
    "eligible once escalated" judge the same votes. Approvals and the issuer both
    use it (`contracts.eligibility.ApproverRules.escalating`).
    """
    if policy.escalate_at is None or not policy.escalate_to:
        return None
    return _at(opened_at, deadline, policy.escalate_at)
