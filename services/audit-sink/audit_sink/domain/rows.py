"""Turn one consumed record into the row the audit store keeps.

The exact bytes received are kept whatever they are: a record that does not
parse is still stored (as `undecodable`, with the reason), because the audit
trail must show what was on the topic, not what we understood of it. Up to a
bound: a record above `AUDIT_MAX_STORED_BYTES` (contracts/limits.py; Kafka lets
through up to twice as much) keeps its first `AUDIT_PREFIX_BYTES` in `raw`, and
the row says what it could not keep: `received_len` (the full size) and
`received_sha256` (the digest of the full bytes). The Merkle leaf commits to
both, and to the prefix stored (docs/hostile-input.md). A record that carries a
bearer token (a PoaIssued's `token`, an ActionRequested's `poa`) is stored
without it (tokens.redact), with `received_sha256` of the bytes received.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import NamedTuple

from audit_sink.domain.facets import Facets, facets_in
from audit_sink.domain.retention import RetentionPolicy
from audit_sink.domain.times import as_utc
from audit_sink.domain.tokens import audit_name_in, redact
from contracts import EventDecodeError, decode_header_and_data
from contracts.limits import AUDIT_MAX_STORED_BYTES, AUDIT_PREFIX_BYTES

__all__ = ["STORED_FIELDS", "UNDECODABLE", "AuditRow", "RecordMeta", "bounded", "row_for"]

UNDECODABLE = "undecodable"


class RecordMeta(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class AuditRow(NamedTuple):
    """One stored row. A named tuple, not a frozen dataclass: as immutable, and built
    three times faster, which counts at one per event ingested (bench/audit_ingest.py)."""

    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    request_id: str | None
    producer: str | None
    occurred_at: datetime
    recorded_at: datetime
    retain_until: datetime
    record_key: bytes | None
    raw: bytes
    decode_error: str | None
    redacted: bool = False
    received_sha256: str | None = None
    received_len: int | None = None
    """Set when `raw` is only the first bytes of what was received: the full length (digest: `received_sha256`)."""
    audit_type: str | None = None
    """An AuditEvent's audit name (`poa_issued`, ...), read from `raw` (tokens.audit_name); not in the leaf:
    the verifier recomputes it from the bytes the leaf commits to (migration 0006)."""
    facets: Facets | None = None
    """The event's search facets when `row_for` read them with its attributes (facets.facets_in); None:
    not read (the store reads them from `raw`). Not a column of the row: stored beside it (migration 0010)."""


STORED_FIELDS = AuditRow._fields[:-1]
"""The fields that are columns of `audit_events`: all but `facets`."""


def bounded(text: str, limit: int) -> str:
    """A derived, indexed column: bounded and without NUL (PostgreSQL refuses both).

    Only these convenience columns are bounded; `raw` keeps the exact bytes.
    """
    if len(text) <= limit and "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")[:limit]


def _record_time(timestamp_ms: int, recorded_at: datetime) -> datetime:
    """Kafka's record timestamp; -1 ("none") or an absurd value falls back to `recorded_at`."""
    if timestamp_ms <= 0:
        return recorded_at
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return recorded_at


def row_for(record: RecordMeta, *, recorded_at: datetime, retention: RetentionPolicy) -> AuditRow:
    """The row for a record; never raises on bad input."""
    raw = record.value or b""
    truncated = len(raw) > AUDIT_MAX_STORED_BYTES
    try:
        # The attributes, and the data as read on the way (the bytes are stored as received).
        envelope, data = decode_header_and_data(record.value)
    except EventDecodeError as exc:
        fallback_time = _record_time(record.timestamp_ms, recorded_at)
        return AuditRow(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=f"{record.topic}:{record.partition}:{record.offset}",
            event_type=UNDECODABLE,
            request_id=None,
            producer=None,
            occurred_at=fallback_time,
            recorded_at=recorded_at,
            retain_until=retention.retain_until(UNDECODABLE, fallback_time),
            record_key=record.key,
            raw=raw[:AUDIT_PREFIX_BYTES] if truncated else raw,
            decode_error=bounded(str(exc), 1024),
            received_sha256=_sha256(raw) if truncated else None,
            received_len=len(raw) if truncated else None,
        )
    # In UTC once here, so that the leaf and the insert need not convert it again.
    occurred = as_utc(envelope.time)
    redacted = redact(envelope.type, raw)
    stored = redacted if redacted is not None else raw
    return AuditRow(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        event_id=bounded(envelope.id, 255),
        event_type=bounded(envelope.type, 128),
        request_id=bounded(envelope.subject, 255) if envelope.subject is not None else None,
        producer=bounded(envelope.source, 2048),
        occurred_at=occurred,
        recorded_at=recorded_at,
        retain_until=retention.retain_until(envelope.type, occurred),
        record_key=record.key,
        raw=stored,
        decode_error=None,
        redacted=redacted is not None,
        received_sha256=_sha256(raw) if redacted is not None else None,
        # From the data read above: what tokens.audit_name and facets.facets_of read from `stored`
        # (redaction changes only a token field; tests/unit/test_audit_row_reading.py holds them equal).
        audit_type=audit_name_in(envelope.type, data),
        facets=facets_in(envelope.type, data),
    )


def _sha256(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()
