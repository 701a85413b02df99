"""Helpers for audit-store tests: events, a store filled like the sink fills it, and DBA-style tampering."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from audit_sink.adapters.db import AuditStore, make_engine
from audit_sink.adapters.signing import NoteSigner, load_or_create_signer
from audit_sink.domain import AuditRow, RecordMeta, RetentionPolicy, row_for
from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.merkle import Frontier
from contracts import AuditEvent, encode_envelope, make_envelope

SOURCE = "spiffe://atb.local/svc/test"
ORIGIN = "atb.local/audit"
NOW = datetime.now(UTC)


def event_bytes(i: int, *, request_id: str | None = None, occurred: datetime | None = None) -> bytes:
    payload = AuditEvent(
        audit_type="approval_vote_counted",
        request_id=request_id or f"req-{i % 37:04d}",
        actor=SOURCE,
        outcome="success",
        details={"i": i},
        occurred_at=occurred or NOW,
    )
    return encode_envelope(make_envelope(payload, source=SOURCE, event_id=f"evt-{i:06d}", time=occurred or NOW))


def rows(
    start: int,
    count: int,
    *,
    topic: str = "atb.audit",
    occurred: datetime | None = None,
    request_id: str | None = None,
    retention: RetentionPolicy | None = None,
) -> list[AuditRow]:
    """`count` rows at offsets start.. on one partition; every 50th is undecodable garbage (kept too)."""
    out = []
    for i in range(start, start + count):
        value = (
            b"\x00garbage\xff" + str(i).encode()
            if i % 50 == 49
            else event_bytes(i, request_id=request_id, occurred=occurred)
        )
        meta = RecordMeta(
            topic=topic,
            partition=i % 3,
            offset=i,
            key=f"k{i}".encode(),
            value=value,
            timestamp_ms=int((occurred or NOW).timestamp() * 1000),
        )
        out.append(row_for(meta, recorded_at=NOW + timedelta(microseconds=i), retention=retention or RetentionPolicy()))
    return out


def offsets_of(batch: Sequence[AuditRow]) -> dict[tuple[str, int], int]:
    nxt: dict[tuple[str, int], int] = {}
    for row in batch:
        key = (row.topic, row.partition)
        nxt[key] = max(nxt.get(key, 0), row.offset + 1)
    return nxt


class Filler:
    """Appends like the sink does and signs checkpoints of what it appended."""

    def __init__(self, url: str, key_dir: Path, group: str = "test") -> None:
        self.store = AuditStore(make_engine(url), group)
        self.signer: NoteSigner = load_or_create_signer(key_dir / "checkpoint.key", ORIGIN)
        self.frontier = Frontier.of(self.store.leaf_hashes())

    def append(self, batch: Sequence[AuditRow]) -> int:
        result = self.store.append(batch, offsets_of(batch))
        assert result.first_index == self.frontier.size
        self.frontier = self.frontier.extend(result.hashes)
        return len(result.rows)

    def checkpoint(self) -> Checkpoint:
        cp = Checkpoint(ORIGIN, self.frontier.size, self.frontier.root())
        self.store.add_checkpoint(cp.size, cp.root, self.signer.sign(cp.body()).render(), datetime.now(UTC))
        return cp

    def fill(self, total: int, *, batch: int = 100, every: int = 300, start: int = 0) -> None:
        for first in range(start, start + total, batch):
            self.append(rows(first, min(batch, start + total - first)))
            if (first - start + batch) % every < batch:
                self.checkpoint()
        self.checkpoint()


@contextmanager
def bypassing_triggers(engine: Engine, *tables: str) -> Iterator[None]:
    """What a DBA can do: switch the append-only triggers off (PostgreSQL: as table owner; SQLite: drop them)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in tables:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        try:
            yield
        finally:
            with engine.begin() as conn:
                for table in tables:
                    conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        return
    with engine.begin() as conn:
        listed = conn.execute(text("SELECT name, sql, tbl_name FROM sqlite_master WHERE type = 'trigger'"))
        saved = [(name, sql) for name, sql, table in listed if table in tables]
        for name, _ in saved:
            conn.execute(text(f"DROP TRIGGER {name}"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            for _, sql in saved:
                conn.execute(text(sql))
