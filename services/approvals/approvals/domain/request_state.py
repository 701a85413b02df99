"""One request's approval, as a pure state machine: request, votes and time in; outcomes out.

The state is the `ApprovalStateChanged` changelog record itself (frozen), so what
the service writes to its changelog is exactly what it decides with after a
restart. Every step returns the next state, the events to publish and the audit
notes, and emits at most one outcome per request over its whole life
(QuorumReached, RequestDenied or RequestExpired): a closed state only refuses.

- held:   votes that arrived before their request (different topics), kept until
          `held_until`, then dropped and audited (never silently lost);
- open:   waiting for votes until the deadline;
- closed: the outcome was emitted; later votes and duplicate requests are refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from approvals.domain.directory import Directory
from approvals.domain.intake import IntakeResult, Requirements
from approvals.domain.tally import Ballot, TallyResult, tally
from contracts import (
    ApprovalStateChanged,
    BallotRecord,
    CountedVote,
    EventPayload,
    IssuanceRequested,
    JsonObject,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    RequirementsRecord,
)

__all__ = [
    "MAX_BALLOTS",
    "MAX_HELD_BALLOTS",
    "AuditNote",
    "Step",
    "on_bad_vote",
    "on_ballot",
    "on_request",
    "on_tick",
    "requirements_of",
]

MAX_HELD_BALLOTS = 8
"""Votes held for one unknown request; more are refused (bounded memory)."""

Outcome = Literal["quorum_reached", "denied", "expired"]

MAX_BALLOTS = 16
"""Votes kept for one open request; more are refused (bounded state)."""


@dataclass(frozen=True)
class AuditNote:
    audit_type: str
    outcome: str
    reason: str = ""
    details: JsonObject = field(default_factory=dict)
    code: str = ""
    """Why, as data (a refused vote's code: metrics count by it; nothing parses `reason`)."""


@dataclass(frozen=True)
class Step:
    """The result of one decision; `changed` False means the state is unchanged (nothing to write)."""

    state: ApprovalStateChanged | None
    events: tuple[EventPayload, ...] = ()
    audits: tuple[AuditNote, ...] = ()
    changed: bool = True


def _record(ballot: Ballot) -> BallotRecord:
    return BallotRecord(
        vote_id=ballot.vote_id,
        identity=ballot.identity,
        choice=ballot.choice,
        digest=ballot.digest,
        received_at=ballot.received_at,
        channel=ballot.channel,
        vote_event=ballot.vote_event,
    )


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


def _close(state: ApprovalStateChanged, outcome: Outcome, now: datetime) -> ApprovalStateChanged:
    """A closed request keeps only what refusing later votes and duplicates needs (small changelog)."""
    return ApprovalStateChanged(
        request_id=state.request_id,
        status="closed",
        outcome=outcome,
        digest=state.digest,
        deadline=state.deadline,
        updated_at=now,
    )


def requirements_of(record: RequirementsRecord) -> Requirements:
    return Requirements.from_record(record)


def on_request(
    state: ApprovalStateChanged | None,
    request: IssuanceRequested,
    request_event: str,
    requirements: Requirements,
    intake: IntakeResult,
    digest: str,
    *,
    directory: Directory,
    now: datetime,
    decided_by: str,
) -> Step:
    """A verified request arrives (with the intake decision already made)."""
    if state is not None and state.status != "held":
        note = AuditNote(
            "approval_duplicate_request",
            "denied",
            "a request with this id already exists; it keeps its one outcome",
            {"status": state.status},
        )
        return Step(state, audits=(note,), changed=False)
    held = tuple(_ballot(r) for r in state.ballots) if state is not None else ()
    outcome = _outcome_of(intake)
    base = ApprovalStateChanged(
        request_id=request.request_id,
        status="closed" if outcome else "open",
        outcome=outcome,
        request=request,
        request_event=request_event,
        requirements=requirements.record(),
        digest=digest,
        deadline=now + timedelta(seconds=requirements.pending_seconds),
        ballots=tuple(_record(b) for b in held),
        updated_at=now,
    )
    intake_note = AuditNote(intake.audit_type, intake.outcome, intake.reason, {"tier": requirements.tier.value})
    if outcome:
        return Step(_close(base, outcome, now), events=intake.events, audits=(intake_note,))
    if not held:
        return Step(base, events=intake.events, audits=(intake_note,))
    step = _decide(base, directory=directory, now=now, decided_by=decided_by, new=held)
    return Step(step.state, (*intake.events, *step.events), (intake_note, *step.audits))


def _outcome_of(intake: IntakeResult) -> Outcome | None:
    for event in intake.events:
        if isinstance(event, QuorumReached):
            return "quorum_reached"
        if isinstance(event, RequestDenied):
            return "denied"
    return None


def on_ballot(
    state: ApprovalStateChanged | None,
    request_id: str,
    ballot: Ballot,
    *,
    directory: Directory,
    now: datetime,
    hold_seconds: int,
    decided_by: str,
) -> Step:
    """A vote with a proven approver identity arrives."""
    details: JsonObject = {"vote_id": ballot.vote_id, "identity": ballot.identity, "channel": ballot.channel}
    if directory.resolve(ballot.identity) is None:
        # Not an approver: refused before it takes any room (no flooding a request's state).
        note = AuditNote("approval_vote_refused", "denied", "unknown_approver", details, code="unknown_approver")
        return Step(state, audits=(note,), changed=False)
    if state is None or state.status == "held":
        held = state.ballots if state is not None else ()
        if len(held) >= MAX_HELD_BALLOTS:
            note = AuditNote(
                "approval_vote_refused",
                "denied",
                "too many votes held for an unknown request",
                details,
                code="too_many_held_votes",
            )
            return Step(state, audits=(note,), changed=False)
        held_state = ApprovalStateChanged(
            request_id=request_id,
            status="held",
            held_until=state.held_until if state and state.held_until else now + timedelta(seconds=hold_seconds),
            ballots=(*held, _record(ballot)),
            updated_at=now,
        )
        note = AuditNote("approval_vote_held", "info", "vote arrived before its request; held", details)
        return Step(held_state, audits=(note,))
    if state.status == "closed":
        note = AuditNote(
            "approval_vote_refused",
            "denied",
            f"after_outcome: request already {state.outcome}",
            details,
            code="after_outcome",
        )
        return Step(state, audits=(note,), changed=False)
    if any(record.vote_id == ballot.vote_id for record in state.ballots):
        note = AuditNote(
            "approval_vote_refused", "denied", "duplicate: this vote was already received", details, code="duplicate"
        )
        return Step(state, audits=(note,), changed=False)
    if len(state.ballots) >= MAX_BALLOTS:
        note = AuditNote(
            "approval_vote_refused", "denied", "too_many_votes for one request", details, code="too_many_votes"
        )
        return Step(state, audits=(note,), changed=False)
    grown = state.model_copy(update={"ballots": (*state.ballots, _record(ballot)), "updated_at": now})
    return _decide(grown, directory=directory, now=now, decided_by=decided_by, new=(ballot,))


def on_bad_vote(state: ApprovalStateChanged | None, code: str, now: datetime) -> Step:
    """A vote for this request could not be parsed or verified: an open request fails closed.

    See docs/architecture.md §6.5.
    """
    if state is None or state.status != "open" or state.request is None:
        return Step(state, changed=False)
    reason = f"a vote for this request could not be verified ({code}); failing closed"
    denied = RequestDenied(
        request_id=state.request_id,
        code="vote_unverifiable",
        reason=reason,
        denied_by="approvals",
        decided_at=now,
        callback_url=state.request.callback_url,
    )
    return Step(
        _close(state, "denied", now), events=(denied,), audits=(AuditNote("approval_request_denied", "denied", reason),)
    )


def on_tick(state: ApprovalStateChanged, *, directory: Directory, now: datetime) -> Step | None:
    """Time passes: an open request past its deadline expires; held votes past their hold are dropped."""
    if state.status == "open" and state.deadline is not None and now > state.deadline:
        request, record, digest = state.request, state.requirements, state.digest
        assert request is not None
        assert record is not None
        assert digest is not None
        result = tally(
            [_ballot(r) for r in state.ballots],
            requirements=requirements_of(record),
            digest=digest,
            requester_ids=(request.agent_id, request.leg.accountable_party.id),
            directory=directory,
            deadline=state.deadline,
        )
        expired = RequestExpired(
            request_id=state.request_id,
            deadline=state.deadline,
            approvals_counted=len(result.counted),
            required_approvals=record.approvals,
            callback_url=request.callback_url,
        )
        note = AuditNote("approval_request_expired", "failure", "deadline passed without quorum")
        return Step(_close(state, "expired", now), events=(expired,), audits=(note,))
    if state.status == "held" and state.ballots and state.held_until is not None and now > state.held_until:
        note = AuditNote(
            "approval_vote_orphaned",
            "failure",
            "votes held for a request that never arrived were dropped",
            {"vote_ids": [b.vote_id for b in state.ballots]},
        )
        emptied = state.model_copy(update={"ballots": (), "held_until": None, "updated_at": now})
        return Step(emptied, audits=(note,))
    return None


def _decide(
    state: ApprovalStateChanged,
    *,
    directory: Directory,
    now: datetime,
    decided_by: str,
    new: tuple[Ballot, ...],
) -> Step:
    request, requirements_record, digest, deadline = state.request, state.requirements, state.digest, state.deadline
    assert request is not None
    assert requirements_record is not None
    assert digest is not None
    assert deadline is not None
    requirements = requirements_of(requirements_record)
    result = tally(
        [_ballot(r) for r in state.ballots],
        requirements=requirements,
        digest=digest,
        requester_ids=(request.agent_id, request.leg.accountable_party.id),
        directory=directory,
        deadline=deadline,
    )
    audits = _vote_notes(result, new)
    if result.denied_by is not None:
        who = result.denied_by
        denied = RequestDenied(
            request_id=request.request_id,
            code="denied_by_approver",
            reason=f"{who.principal} ({who.approver_type}) denied the request",
            denied_by=who.principal,
            decided_at=now,
            callback_url=request.callback_url,
        )
        note = AuditNote("approval_request_denied", "denied", denied.reason, {"denied_by": who.principal})
        return Step(_close(state, "denied", now), events=(denied,), audits=(*audits, note))
    if result.verified:
        quorum = QuorumReached(
            request_id=request.request_id,
            tier=requirements.tier,
            required_approvals=requirements.approvals,
            request_digest=digest,
            poa_ttl_seconds=requirements.poa_ttl_seconds,
            request=request,
            request_event=state.request_event or "",
            votes=tuple(_counted_vote(c.principal, result.group_of(c), c.groups, c.ballot) for c in result.counted),
            decided_at=now,
        )
        note = AuditNote(
            "approval_quorum_reached",
            "success",
            f"{len(result.counted)} of {requirements.approvals} distinct approvers",
            {
                "approvers": [c.principal for c in result.counted],
                "groups": {c.principal: result.group_of(c) for c in result.counted},
                "tier": requirements.tier.value,
            },
        )
        return Step(_close(state, "quorum_reached", now), events=(quorum,), audits=(*audits, note))
    return Step(state, audits=audits)


def _counted_vote(principal: str, approver_type: str, groups: frozenset[str], ballot: Ballot) -> CountedVote:
    """The evidence of one counted vote: `approver_type` is the group it fills in the composition."""
    return CountedVote(
        approver_id=principal,
        approver_type=approver_type,
        approver_groups=tuple(sorted(groups)),
        vote_digest="sha256:" + hashlib.sha256(ballot.vote_event.encode()).hexdigest(),
        cast_at=ballot.received_at,
        vote_event=ballot.vote_event,
    )


def _vote_notes(result: TallyResult, new: tuple[Ballot, ...]) -> tuple[AuditNote, ...]:
    """One audit note per newly received ballot: counted, or refused and why."""
    notes: list[AuditNote] = []
    new_ids = {b.vote_id for b in new}
    for counted in result.counted:
        if counted.ballot.vote_id in new_ids:
            notes.append(
                AuditNote(
                    "approval_vote_counted",
                    "success",
                    f"{counted.principal} approved",
                    {
                        "vote_id": counted.ballot.vote_id,
                        "principal": counted.principal,
                        "channel": counted.ballot.channel,
                    },
                )
            )
    for refused in result.refused:
        if refused.ballot.vote_id in new_ids:
            kind = "approval_self_vote_refused" if refused.reason == "self_approval" else "approval_vote_refused"
            notes.append(
                AuditNote(
                    kind,
                    "denied",
                    refused.reason,
                    {"vote_id": refused.ballot.vote_id, "identity": refused.ballot.identity},
                    code=refused.reason,
                )
            )
    return tuple(notes)
