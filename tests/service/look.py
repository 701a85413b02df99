"""Reading what the services produced, as exact values to compare with what a scenario expects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from contracts import (
    ApprovalRequired,
    AuditEvent,
    BrokerDecision,
    DeadLetter,
    EventPayload,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    Topic,
)
from tests.service.bus import Bus, events_of

__all__ = [
    "audit_events",
    "audits",
    "dead_letters",
    "decisions",
    "denied",
    "kinds",
    "one",
    "outcomes",
    "poas",
    "quorum",
    "required",
]

T = TypeVar("T", bound=EventPayload)


async def _about(bus: Bus, topic: Topic, request_id: str | None) -> list[EventPayload]:
    return [e for e in events_of(await bus.records(topic)) if getattr(e, "request_id", None) == request_id]


async def outcomes(bus: Bus, request_id: str) -> list[EventPayload]:
    """The request's outcomes, in the order they were produced (one partition keeps a request's order)."""
    return await _about(bus, Topic.OUTCOMES, request_id)


def kinds(events: Sequence[EventPayload]) -> list[str]:
    return [type(e).__name__ for e in events]


def one(events: Sequence[EventPayload], kind: type[T]) -> T:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, f"expected exactly one {kind.__name__}, got {kinds(events)}"
    return found[0]


async def required(bus: Bus, request_id: str) -> ApprovalRequired:
    return one(await outcomes(bus, request_id), ApprovalRequired)


async def quorum(bus: Bus, request_id: str) -> QuorumReached:
    return one(await outcomes(bus, request_id), QuorumReached)


async def denied(bus: Bus, request_id: str) -> RequestDenied:
    return one(await outcomes(bus, request_id), RequestDenied)


async def audits(bus: Bus, request_id: str) -> list[tuple[str, str]]:
    """(audit type, outcome) of every audit event about the request, in order."""
    return [(e.audit_type, e.outcome) for e in await _about(bus, Topic.AUDIT, request_id) if isinstance(e, AuditEvent)]


async def audit_events(bus: Bus, request_id: str | None) -> list[AuditEvent]:
    """The audit events about `request_id` (None: those about no request)."""
    return [e for e in await _about(bus, Topic.AUDIT, request_id) if isinstance(e, AuditEvent)]


async def poas(bus: Bus, request_id: str) -> list[PoaIssued]:
    return [e for e in await _about(bus, Topic.POA_ISSUED, request_id) if isinstance(e, PoaIssued)]


async def decisions(bus: Bus, request_id: str) -> list[BrokerDecision]:
    return [e for e in await _about(bus, Topic.BROKER_DECISIONS, request_id) if isinstance(e, BrokerDecision)]


async def dead_letters(bus: Bus) -> list[tuple[str, str, int, str]]:
    """(consumer, original topic, original offset, error code) of every dead letter."""
    return [
        (e.consumer, e.original_topic, e.original_offset, e.error_code)
        for e in events_of(await bus.records(Topic.DLQ))
        if isinstance(e, DeadLetter)
    ]
