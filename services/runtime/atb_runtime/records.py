"""Outgoing records and the helpers that turn payloads into them.

A handler returns `Outgoing` values; the processor sends them. Keeping them as
plain frozen values means a handler's output can be checked in a unit test
without a broker.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from prometheus_client import Counter

from atb_runtime.tracing import stamped
from contracts import (
    CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    AuditEvent,
    DeadLetter,
    Envelope,
    EventPayload,
    JsonObject,
    encode_envelope,
    make_envelope,
    topic_name,
)
from contracts.limits import DEAD_LETTER_KEY_CHARS, DEAD_LETTER_PREFIX_BYTES
from contracts.redaction import mask_tokens

__all__ = [
    "DeadLetters",
    "Incoming",
    "Outgoing",
    "audit",
    "dead_letter",
    "letter_for",
    "outgoing",
    "outgoing_envelope",
    "received",
]

log = logging.getLogger(__name__)

Headers = tuple[tuple[str, bytes], ...]
_CE_HEADERS: Headers = ((CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()),)


@dataclass(frozen=True)
class Incoming:
    """One consumed record, as received (exact bytes kept)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int = 0


def received(msg: object) -> Incoming:
    """An aiokafka `ConsumerRecord` as an `Incoming` (aiokafka's records are untyped)."""
    headers = tuple((k, bytes(v)) for k, v in (getattr(msg, "headers", None) or ()))
    return Incoming(
        topic=getattr(msg, "topic"),  # noqa: B009
        partition=getattr(msg, "partition"),  # noqa: B009
        offset=getattr(msg, "offset"),  # noqa: B009
        key=getattr(msg, "key"),  # noqa: B009
        value=getattr(msg, "value"),  # noqa: B009
        headers=headers,
        timestamp_ms=getattr(msg, "timestamp", 0) or 0,
    )


AfterCommit = Callable[[], Awaitable[None]]
"""A side effect to run once its record is committed (`Outgoing.after_commit`)."""


@dataclass(frozen=True)
class Outgoing:
    """One record to produce; a `value` of None is a tombstone (compacted topics forget the key).

    `after_commit` is a side effect outside Kafka that may happen only once the
    record is committed: the processor runs it after its transaction commits, and
    never when the transaction aborts or is fenced (a thawed zombie's outputs tell
    nobody). A crash between the commit and the effect loses the effect: at most
    once. An effect that must outlive a crash reads the committed record back
    instead, at least once (`atb_runtime.acking`: the issuer's outcome callbacks).
    """

    topic: str
    key: bytes
    value: bytes | None
    headers: Headers = field(default=_CE_HEADERS)
    after_commit: AfterCommit | None = field(default=None, compare=False, repr=False)


async def run_after_commit(outputs: Iterable[Outgoing]) -> None:
    """Run the committed records' side effects, in order; one that fails is logged and the rest still run."""
    for out in outputs:
        if out.after_commit is None:
            continue
        try:
            await out.after_commit()
        except Exception:
            log.exception("a side effect of a committed record on %s failed", out.topic)


def with_after_commit(record: Outgoing, effect: AfterCommit) -> Outgoing:
    """`record`, whose committing runs `effect` afterwards."""
    return replace(record, after_commit=effect)


def outgoing_envelope(envelope: Envelope, topic: str) -> Outgoing:
    """An already-built envelope (e.g. one carrying a proof) as a record."""
    # With the trace context of the record it answers, or of the current span (atb_runtime.tracing).
    envelope = stamped(envelope)
    return Outgoing(topic=topic, key=envelope.partitionkey.encode(), value=encode_envelope(envelope))


def outgoing(payload: EventPayload, *, source: str, namespace: str, event_id: str | None = None) -> Outgoing:
    """Wrap a payload in an envelope addressed to its catalogue topic."""
    envelope = make_envelope(payload, source=source, event_id=event_id)
    return outgoing_envelope(envelope, topic_name(payload.topic, namespace))


def audit(
    audit_type: str,
    *,
    source: str,
    namespace: str,
    outcome: str,
    request_id: str | None = None,
    reason: str = "",
    details: JsonObject | None = None,
) -> Outgoing:
    """An AuditEvent record on `atb.audit`."""
    event = AuditEvent(
        audit_type=audit_type,
        request_id=request_id,
        actor=source,
        outcome=outcome,  # type: ignore[arg-type]  # validated by the model
        reason=reason,
        details=details or {},
        occurred_at=datetime.now(UTC),
    )
    return outgoing(event, source=source, namespace=namespace)


DEAD_LETTERS = Counter(
    "atb_dead_letters_total",
    "Records set aside to the dead-letter topic, by consumer and error code (counted when the letter is made: "
    "a letter of a batch whose transaction aborts and is retried is counted again)",
    ["consumer", "error_code"],
)


def letter_for(
    record: Incoming, *, consumer: str, error_code: str, reason: str, request_id: str | None = None
) -> DeadLetter:
    """The DeadLetter of a record, by reference: bounded whatever the record's size (contracts/limits.py)."""
    DEAD_LETTERS.labels(consumer[:256], error_code[:64]).inc()
    value = record.value or b""
    key = record.key.decode("utf-8", "replace")[:DEAD_LETTER_KEY_CHARS] if record.key is not None else None
    return DeadLetter(
        original_topic=record.topic,
        original_partition=record.partition,
        original_offset=record.offset,
        original_key=key,
        original_size=len(value),
        original_sha256="sha256:" + hashlib.sha256(value).hexdigest(),
        original_prefix_b64=base64.b64encode(mask_tokens(value[:DEAD_LETTER_PREFIX_BYTES])).decode(),
        consumer=consumer[:256],
        error_code=error_code[:64],
        reason=reason[:1024],
        request_id=request_id[:128] if request_id else None,
    )


def dead_letter(
    record: Incoming,
    *,
    consumer: str,
    error_code: str,
    reason: str,
    source: str,
    namespace: str,
    request_id: str | None = None,
) -> list[Outgoing]:
    """A DeadLetter pointing at the original (coordinates, size, SHA-256, prefix), and its audit event."""
    letter = letter_for(record, consumer=consumer, error_code=error_code, reason=reason, request_id=request_id)
    headers = (
        *_CE_HEADERS,
        ("atb-dlq-original-topic", record.topic.encode()),
        ("atb-dlq-original-partition", str(record.partition).encode()),
        ("atb-dlq-original-offset", str(record.offset).encode()),
        ("atb-dlq-error", letter.error_code.encode()),
    )
    envelope = stamped(make_envelope(letter, source=source))
    letter_record = Outgoing(
        topic=topic_name(letter.topic, namespace),
        key=envelope.partitionkey.encode(),
        value=encode_envelope(envelope),
        headers=headers,
    )
    audit_record = audit(
        "event_dead_lettered",
        source=source,
        namespace=namespace,
        outcome="failure",
        request_id=letter.request_id,
        reason=f"{letter.error_code}: {reason}"[:1024],
        details={
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "consumer": letter.consumer,
            "error_code": letter.error_code,
            "size": letter.original_size,
            "sha256": letter.original_sha256,
        },
    )
    return [letter_record, audit_record]


def request_id_hint(record: Incoming) -> str | None:
    """The record key, which is the request id by convention (README.md, Events)."""
    return record.key.decode("utf-8", "replace")[:128] if record.key else None


@dataclass(frozen=True)
class DeadLetters:
    """One consumer's dead-lettering: `dead(record, code, reason)` → the DeadLetter and its audit event."""

    consumer: str
    source: str
    namespace: str

    def __call__(self, record: Incoming, code: str, reason: str, request_id: str | None = None) -> list[Outgoing]:
        return dead_letter(
            record,
            consumer=self.consumer,
            error_code=code,
            reason=reason,
            source=self.source,
            namespace=self.namespace,
            request_id=request_id or request_id_hint(record),
        )

    def crashed(self, record: Incoming, exc: Exception) -> list[Outgoing]:
        """A record the handler failed on unexpectedly: dead-lettered alone (see `each_record`)."""
        return self(record, "internal_error", f"{type(exc).__name__}: {exc}")
