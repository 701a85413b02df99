"""`atb trace <request-id | jti>`: the whole life of one request, from every topic.

Every record of a request is keyed by its request id (docs/architecture.md §4.4), so its
history lives on one partition of each topic: the trace reads exactly those
partitions (`read_committed`, from the beginning to the end offsets taken at
start), and, with `--audit-db`, the audit store for what Kafka no longer keeps.
Nothing is written anywhere.

The timeline names each step, who produced it (the proven SPIFFE ID in the
envelope), and the latency from the step before; votes say through which
channel they came and whether they were counted or refused and why (matched
with the approvals service's audit events by vote id); the PoA shows its claims,
never the token.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from contracts import (
    CATALOGUE,
    ActionRequested,
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    BrokerDecision,
    DeadLetter,
    DeadLetterV1,
    Envelope,
    EventDecodeError,
    EventPayload,
    IssuanceRequested,
    PoaIssued,
    PoaRevoked,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Topic,
    VoteCast,
    decode_envelope,
    payload_of,
    spec_for,
    topic_name,
)

__all__ = [
    "Step",
    "TraceRecord",
    "build_timeline",
    "follow_request",
    "partition_for",
    "read_request",
    "resolve_request_id",
    "timeline_json",
]

# Topics a request's records live on (the compacted key topic is not one of them).
REQUEST_TOPICS: tuple[Topic, ...] = tuple(spec.topic for spec in CATALOGUE if spec.topic is not Topic.KEYS)


@dataclass(frozen=True)
class TraceRecord:
    """One record as found (Kafka or the audit store), decoded when possible."""

    topic: str
    partition: int
    offset: int
    envelope: Envelope | None
    payload: EventPayload | None
    origin: str = "kafka"
    checkpoint: str | None = None
    """For rows from the audit store: the checkpoint that covers them, if known."""


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


def partition_for(request_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives this key (murmur2, as the Java client)."""
    index: int = murmur2(request_id.encode()) & 0x7FFFFFFF
    return index % partitions


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
    if isinstance(p, BrokerDecision):
        return (
            "broker decision",
            f"{p.decision.value}: {'; '.join(p.reasons)} (jti {p.jti}, policy {p.policy_version})",
            {"action_id": p.action_id, "reasons": list(p.reasons)},
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


def build_timeline(records: Iterable[TraceRecord]) -> list[Step]:
    """Steps in time order (then topic/offset), with latencies; duplicates (same event id) once."""
    unique: dict[str, TraceRecord] = {}
    for r in records:
        key = r.envelope.id if r.envelope is not None else f"{r.topic}:{r.partition}:{r.offset}"
        current = unique.get(key)
        if current is None:
            unique[key] = r
            continue
        # Found twice (Kafka and the audit store): keep Kafka's, with the store's checkpoint.
        kafka, other = (current, r) if current.origin == "kafka" else (r, current)
        unique[key] = replace(kafka, checkpoint=kafka.checkpoint or other.checkpoint)
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
            )
        )
        previous = at
    return steps


def timeline_json(request_id: str, steps: Sequence[Step]) -> str:
    return json.dumps(
        {
            "request_id": request_id,
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
                }
                for s in steps
            ],
        },
        indent=2,
        default=str,
    )


def _decode(topic: str, partition: int, offset: int, value: bytes | None) -> TraceRecord:
    try:
        envelope = decode_envelope(value)
        return TraceRecord(topic, partition, offset, envelope, payload_of(envelope))
    except EventDecodeError:
        return TraceRecord(topic, partition, offset, None, None)


def _belongs(record: TraceRecord, request_id: str, key: bytes | None) -> bool:
    if key is not None and key == request_id.encode():
        return True
    payload = record.payload
    return payload is not None and getattr(payload, "request_id", None) == request_id


def _partitions(request_id: str, namespace: str) -> list[TopicPartition]:
    return [
        TopicPartition(topic_name(t, namespace), partition_for(request_id, spec_for(t).partitions))
        for t in REQUEST_TOPICS
    ]


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
    tps = _partitions(request_id, namespace)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed", group_id=None
    )
    await consumer.start()
    try:
        existing = set((await consumer.topics()) or ())
        tps = [tp for tp in tps if tp.topic in existing]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        stop_at = time.monotonic() + follow_s
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=200, max_records=5000)
            for tp, messages in batches.items():
                for msg in messages:
                    record = _decode(tp.topic, tp.partition, msg.offset, msg.value)
                    if _belongs(record, request_id, msg.key):
                        yield record
            caught_up = all([await consumer.position(tp) >= end[tp] for tp in tps])
            if caught_up and time.monotonic() >= stop_at:
                return
    finally:
        await consumer.stop()


async def resolve_request_id(bootstrap: str, target: str, namespace: str = "") -> str:
    """`target` if it is a request id; the request of a PoA if it is a jti (searched on atb.poa.issued)."""
    topic = topic_name(Topic.POA_ISSUED, namespace)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        if topic not in set((await consumer.topics()) or ()):
            return target
        tps = [TopicPartition(topic, p) for p in range(spec_for(Topic.POA_ISSUED).partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = [tp for tp in tps if end[tp] > 0]
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=300, max_records=5000)
            for messages in batches.values():
                for msg in messages:
                    record = _decode(topic, 0, msg.offset, msg.value)
                    if isinstance(record.payload, PoaIssued) and record.payload.jti == target:
                        return record.payload.request_id
            remaining = [tp for tp in remaining if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
    return target
