"""`atb trace <request-id | jti>`: the whole life of one request, from every topic.

Every record of a request is keyed by its request id (docs/architecture.md §4.4), so its
history lives on one partition of each topic: the trace reads exactly those
partitions, the key's under each topic's real partition count
(`atb_runtime.readback`: `read_committed`, from the beginning to the end offsets
taken at start), with `--audit-db`, the audit store for what Kafka no longer keeps, and
with `--archive`, the immutable archive for what hot retention removed from the store
(`atb.trace.archive`: every archived row is verified before it is shown).
Nothing is written anywhere.

Each step also names the W3C trace id its record carried (the envelope's
`traceparent`), so a request can be looked up in the tracing backend; the
table's title and the JSON's `trace_ids` list them.

The timeline names each step, who produced it (the proven SPIFFE ID in the
envelope), and the latency from the step before; votes say through which
channel they came and whether they were counted or refused and why (matched
with the approvals service's audit events by vote id); the PoA shows its claims,
never the token.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from atb_runtime.readback import StoredRecord, decode, iter_records, partition_for
from atb_runtime.tracing import trace_id_of
from contracts import (
    CATALOGUE,
    ActionRequested,
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    BrokerDecision,
    BrokerDecisionV1,
    DeadLetter,
    DeadLetterV1,
    Envelope,
    EventPayload,
    IssuanceRequested,
    PoaIssued,
    PoaRevoked,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Topic,
    VoteCast,
    topic_name,
)

__all__ = [
    "Step",
    "TraceRecord",
    "build_timeline",
    "find_poa",
    "follow_request",
    "partition_for",
    "read_request",
    "resolve_request_id",
    "timeline_json",
    "trace_ids",
]

# Topics a request's records live on (the compacted key topic is not one of them).
REQUEST_TOPICS: tuple[Topic, ...] = tuple(spec.topic for spec in CATALOGUE if spec.topic is not Topic.KEYS)


@dataclass(frozen=True)
class TraceRecord:
    """One record as found (Kafka, the audit store or the archive), decoded when possible."""

    topic: str
    partition: int
    offset: int
    envelope: Envelope | None
    payload: EventPayload | None
    origin: str = "kafka"
    checkpoint: str | None = None
    """For rows from the audit store or the archive: the checkpoint that covers them, if known."""


@dataclass(frozen=True)
class Step:
    at: datetime
    topic: str
    kind: str
    who: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    event_id: str = ""
    origin: str = "kafka"
    since_start_ms: float = 0.0
    since_previous_ms: float = 0.0
    trace_id: str | None = None
    """The W3C trace id the record carried (its envelope's `traceparent`), if any."""


def _short(source: str) -> str:
    return source.split("://", 1)[-1].split("/", 1)[-1] if source.startswith("spiffe://") else source


def _claims(token: str) -> dict[str, Any]:
    """The PoA's claims, decoded without verification: shown, never trusted or printed as a token."""
    try:
        body = token.split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _vote_verdicts(records: Sequence[TraceRecord]) -> dict[str, str]:
    """vote id → "counted" or "refused: <why>", from the approvals service's audit events."""
    verdicts: dict[str, str] = {}
    for r in records:
        p = r.payload
        if not isinstance(p, AuditEvent):
            continue
        vote_id = p.details.get("vote_id") if isinstance(p.details, dict) else None
        if not isinstance(vote_id, str):
            continue
        if p.audit_type == "approval_vote_counted":
            verdicts[vote_id] = "counted"
        elif p.audit_type in ("approval_vote_refused", "approval_self_vote_refused"):
            verdicts[vote_id] = f"refused: {p.reason}"
        elif p.audit_type == "approval_vote_held":
            verdicts.setdefault(vote_id, "held (arrived before its request)")
    return verdicts


def _describe(record: TraceRecord, verdicts: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """(kind, one-line summary, details) of one record."""
    p = record.payload
    if p is None:
        return "undecodable", "a record that does not decode (see atb.dlq)", {}
    if isinstance(p, IssuanceRequested):
        leg = p.leg
        return (
            "requested",
            f"{_short(p.agent_id)} asks {p.action} on {p.resource} "
            f"for {leg.accountable_party.id} ({leg.basis} {leg.ref})",
            {"params": p.params, "tenant": p.tenant, "target_tenant": p.target_tenant},
        )
    if isinstance(p, ApprovalRequired):
        ticket = ", ticket required" if p.ticket_required else ""
        return (
            "approval required",
            f"tier {p.tier.value}: {p.required_approvals} of {', '.join(p.eligible_groups)}{ticket}, "
            f"deadline {p.deadline:%H:%M:%S}",
            {"request_digest": p.request_digest, "accountable_party": p.accountable_party_id},
        )
    if isinstance(p, VoteCast):
        attested = record.envelope is not None and record.envelope.source != p.approver_id
        how = f"{p.channel}" + (
            f" (attested by {_short(record.envelope.source)})" if attested and record.envelope else ""
        )
        verdict = verdicts.get(p.vote_id, "no verdict recorded")
        return (
            "vote",
            f"{p.approver_id} votes {p.choice.value} via {how}: {verdict}",
            {"vote_id": p.vote_id, "reason": p.reason, "verdict": verdict},
        )
    if isinstance(p, ApprovalStateChanged):
        outcome = f" ({p.outcome})" if p.outcome else ""
        return "approval state", f"{p.status}{outcome}: {len(p.ballots)} ballot(s)", {}
    if isinstance(p, QuorumReached):
        names = ", ".join(f"{v.approver_id} ({v.approver_type})" for v in p.votes) or "none needed"
        return "quorum reached", f"tier {p.tier.value}; approvers: {names}", {}
    if isinstance(p, RequestDenied):
        return "denied", p.reason, {}
    if isinstance(p, RequestExpired):
        return "expired", "deadline passed without quorum", {}
    if isinstance(p, PoaIssued):
        shown = _claims(p.token)
        legal = shown.get("leg")
        dual = legal.get("dual_control") if isinstance(legal, dict) else None
        approvers = dual.get("approvers") if isinstance(dual, dict) else None
        return (
            "PoA issued",
            f"jti {p.jti}, tier {p.tier.value}, expires {p.expires_at:%H:%M:%S}, kid {p.kid[:12]}…"
            + (f", approvers {', '.join(str(a.get('id')) for a in approvers)}" if approvers else ""),
            {"claims": shown},
        )
    if isinstance(p, PoaRevoked):
        return "revoked", f"{'every PoA' if p.jti == '*' else 'jti ' + p.jti} by {p.revoked_by}: {p.reason}", {}
    if isinstance(p, ActionRequested):
        return (
            "action requested",
            f"{_short(p.agent_id)}: {p.action} on {p.resource} (Kafka)",
            {"action_id": p.action_id},
        )
    if isinstance(p, BrokerDecisionV1):
        v1 = p
        try:
            p = v1.upcast()
        except ValueError:  # a reason code this version does not know: shown as it was recorded
            return "broker decision", f"{v1.decision.value}: {'; '.join(v1.reasons)} (v1)", {"action_id": v1.action_id}
    if isinstance(p, BrokerDecision):
        return (
            "broker decision",
            f"{p.decision.value}: {'; '.join(map(str, p.reasons))} (jti {p.jti}, policy {p.policy_version})",
            {"action_id": p.action_id, "reasons": [{"code": r.code.value, "detail": r.detail} for r in p.reasons]},
        )
    if isinstance(p, AuditEvent):
        return f"audit: {p.audit_type}", f"{p.outcome}" + (f": {p.reason}" if p.reason else ""), dict(p.details)
    if isinstance(p, DeadLetter | DeadLetterV1):
        return (
            "dead letter",
            f"{p.consumer} could not use {p.original_topic}@{p.original_partition}:{p.original_offset}: "
            f"{p.error_code}: {p.reason}",
            {},
        )
    return type(p).__name__, "", {}


_RANK = {"kafka": 0, "audit store": 1, "archive": 2}
"""Which copy of a record found twice is shown: Kafka's, then the audit store's, then the archive's."""


def build_timeline(records: Iterable[TraceRecord]) -> list[Step]:
    """Steps in time order (then topic/offset), with latencies; duplicates (same event id) once."""
    unique: dict[str, TraceRecord] = {}
    for r in records:
        key = r.envelope.id if r.envelope is not None else f"{r.topic}:{r.partition}:{r.offset}"
        current = unique.get(key)
        if current is None:
            unique[key] = r
            continue
        # Found twice: keep Kafka's, else the audit store's, else the archive's, with a checkpoint if either has one.
        kept, other = (current, r) if _RANK.get(current.origin, 3) <= _RANK.get(r.origin, 3) else (r, current)
        unique[key] = replace(kept, checkpoint=kept.checkpoint or other.checkpoint)
    ordered = sorted(
        (r for r in unique.values() if r.envelope is not None),
        key=lambda r: (r.envelope.time if r.envelope else datetime.min, r.topic, r.offset),
    )
    verdicts = _vote_verdicts(ordered)
    steps: list[Step] = []
    start: datetime | None = None
    previous: datetime | None = None
    for r in ordered:
        assert r.envelope is not None
        at = r.envelope.time
        start = start or at
        kind, summary, details = _describe(r, verdicts)
        if r.checkpoint:
            details = {**details, "checkpoint": r.checkpoint}
        steps.append(
            Step(
                at=at,
                topic=r.topic,
                kind=kind,
                who=_short(r.envelope.source),
                summary=summary,
                details=details,
                event_id=r.envelope.id,
                origin=r.origin,
                since_start_ms=(at - start).total_seconds() * 1000,
                since_previous_ms=(at - previous).total_seconds() * 1000 if previous else 0.0,
                trace_id=trace_id_of(r.envelope.traceparent),
            )
        )
        previous = at
    return steps


def trace_ids(steps: Sequence[Step]) -> list[str]:
    """The trace ids of a timeline, in the order they first appear (one, when the request was followed whole)."""
    return list(dict.fromkeys(s.trace_id for s in steps if s.trace_id))


def timeline_json(request_id: str, steps: Sequence[Step], *, archive: dict[str, Any] | None = None) -> str:
    """The timeline as JSON; `archive`, when the archive was read: what was read from it and verified."""
    return json.dumps(
        {
            "request_id": request_id,
            "trace_ids": trace_ids(steps),
            **({"archive": archive} if archive is not None else {}),
            "steps": [
                {
                    "at": s.at.isoformat(),
                    "since_start_ms": round(s.since_start_ms, 3),
                    "since_previous_ms": round(s.since_previous_ms, 3),
                    "topic": s.topic,
                    "kind": s.kind,
                    "who": s.who,
                    "summary": s.summary,
                    "details": s.details,
                    "event_id": s.event_id,
                    "origin": s.origin,
                    "trace_id": s.trace_id,
                }
                for s in steps
            ],
        },
        indent=2,
        default=str,
    )


def _decode(stored: StoredRecord) -> TraceRecord:
    event = decode(stored)
    envelope, payload = (event.envelope, event.payload) if event is not None else (None, None)
    return TraceRecord(stored.topic, stored.partition, stored.offset, envelope, payload)


def _belongs(record: TraceRecord, request_id: str, key: bytes | None) -> bool:
    if key is not None and key == request_id.encode():
        return True
    payload = record.payload
    return payload is not None and getattr(payload, "request_id", None) == request_id


async def read_request(bootstrap: str, request_id: str, namespace: str = "") -> list[TraceRecord]:
    """Every committed record of `request_id` on Kafka now (reads one partition per topic)."""
    found: list[TraceRecord] = []
    async for record in _scan(bootstrap, request_id, namespace, follow_s=0.0):
        found.append(record)
    return found


async def follow_request(
    bootstrap: str, request_id: str, namespace: str = "", *, seconds: float = 60.0
) -> AsyncIterator[TraceRecord]:
    """What is there, then new records of the request as they are committed, for `seconds`."""
    async for record in _scan(bootstrap, request_id, namespace, follow_s=seconds):
        yield record


async def _scan(bootstrap: str, request_id: str, namespace: str, *, follow_s: float) -> AsyncIterator[TraceRecord]:
    # The partition of each topic is the key's under the topic's real partition count.
    topics = [topic_name(t, namespace) for t in REQUEST_TOPICS]
    async with aclosing(iter_records(bootstrap, topics, key=request_id, follow_s=follow_s, poll_ms=200)) as records:
        async for stored in records:
            record = _decode(stored)
            if _belongs(record, request_id, stored.key):
                yield record


async def resolve_request_id(bootstrap: str, target: str, namespace: str = "") -> str:
    """`target` if it is a request id; the request of a PoA if it is a jti (searched on atb.poa.issued)."""
    found = await find_poa(bootstrap, target, namespace)
    return found.payload.request_id if found is not None and isinstance(found.payload, PoaIssued) else target


async def find_poa(bootstrap: str, jti: str, namespace: str = "") -> TraceRecord | None:
    """The PoaIssued record of this jti on atb.poa.issued (every partition), where it was found; None if none."""
    topic = topic_name(Topic.POA_ISSUED, namespace)
    async with aclosing(iter_records(bootstrap, [topic])) as records:
        async for stored in records:
            record = _decode(stored)
            if isinstance(record.payload, PoaIssued) and record.payload.jti == jti:
                return record
    return None
