"""`atb replay audit`: rebuild the audit store of a time range from Kafka, and compare it with the live one.

The rebuild goes through the sink's own row builder (`row_for`, same retention,
same token redaction) and store (`AuditStore.append`: rows, Merkle leaves and
offsets in one transaction) into a fresh database, never the live one. The
comparison reads the live store (SELECT only) for exactly the offsets the run
scanned and reports, per record coordinate, what is missing from the live store,
what the live store has that Kafka does not, and what differs (the stored bytes,
ids, times or retention). `recorded_at` is not compared: it is when a row was
written, which a rebuild cannot reproduce.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, or_, select

from atb.replay.runs import PartitionSpan
from atb_runtime import Incoming
from audit_sink.adapters.db import AuditStore, audit_events, make_engine, migrate
from audit_sink.domain.retention import RetentionPolicy
from audit_sink.domain.rows import RecordMeta, row_for

__all__ = ["AuditComparison", "AuditRebuild", "compare_stores"]

_COMPARED = (
    "event_id",
    "event_type",
    "request_id",
    "producer",
    "occurred_at",
    "retain_until",
    "redacted",
    "received_sha256",
    "received_len",
    "decode_error",
)


class AuditRebuild:
    """The scan handler: each batch becomes rows of a fresh store, offsets in the same transaction."""

    def __init__(self, into_url: str, retention: RetentionPolicy) -> None:
        migrate(into_url)
        self._store = AuditStore(make_engine(into_url), group_id="atb-replay-audit")
        self._retention = retention
        self.rows = 0

    @property
    def engine(self) -> Engine:
        return self._store.engine

    async def handle(self, batch: Sequence[Incoming]) -> None:
        now = datetime.now(UTC)
        rows = [
            row_for(
                RecordMeta(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms),
                recorded_at=now,
                retention=self._retention,
            )
            for r in batch
        ]
        next_offsets: dict[tuple[str, int], int] = {}
        for r in batch:
            next_offsets[(r.topic, r.partition)] = max(next_offsets.get((r.topic, r.partition), 0), r.offset + 1)
        result = await asyncio.to_thread(self._store.append, rows, next_offsets)
        self.rows += len(result.rows)


@dataclass(frozen=True)
class Difference:
    coordinate: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class AuditComparison:
    compared: int
    missing: tuple[str, ...] = ()
    """On Kafka (so in the rebuild), not in the live store."""
    extra: tuple[str, ...] = ()
    """In the live store for the scanned offsets, not on Kafka."""
    different: tuple[Difference, ...] = field(default_factory=tuple)

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.different)


def _fingerprints(engine: Engine, spans: Iterable[PartitionSpan]) -> dict[str, tuple[object, ...]]:
    """`topic:partition:offset` → the compared fields (and the digest of the bytes) of rows in the spans."""
    conditions = [
        and_(
            audit_events.c.topic == s.topic,
            audit_events.c.partition == s.partition,
            audit_events.c.offset >= s.start,
            audit_events.c.offset < s.end,
        )
        for s in spans
        if s.size > 0
    ]
    if not conditions:
        return {}
    columns = [audit_events.c[name] for name in _COMPARED]
    query = select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset, audit_events.c.raw, *columns)
    out: dict[str, tuple[object, ...]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query.where(or_(*conditions))):
            topic, partition, offset, raw, *values = row
            times = [v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v for v in values]
            out[f"{topic}:{partition}:{offset}"] = (hashlib.sha256(bytes(raw)).hexdigest(), *times)
    return out


def compare_stores(live: Engine, rebuilt: Engine, spans: Sequence[PartitionSpan]) -> AuditComparison:
    want = _fingerprints(rebuilt, spans)
    have = _fingerprints(live, spans)
    names = ("raw", *_COMPARED)
    different = tuple(
        Difference(key, tuple(n for n, a, b in zip(names, want[key], have[key], strict=True) if a != b))
        for key in sorted(want.keys() & have.keys())
        if want[key] != have[key]
    )
    return AuditComparison(
        compared=len(want.keys() | have.keys()),
        missing=tuple(sorted(want.keys() - have.keys())),
        extra=tuple(sorted(have.keys() - want.keys())),
        different=different,
    )
