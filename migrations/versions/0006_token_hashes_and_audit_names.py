"""No bearer token in the audit store; the audit name (`event_type` to a SIEM) beside every row.

1. `audit_type` on `audit_events`: an AuditEvent's audit name (`poa_issued`, ...),
   read from its bytes, NULL for other events. Not part of the Merkle leaf (leaves
   of existing rows cannot change); the verifier recomputes it from the bytes the
   leaf commits to. The view `audit_siem` shows every row as a SIEM queries it:
   `event_type` = the audit name of an AuditEvent, else the CloudEvents type, which
   `ce_type` always holds.
2. Existing rows that carry a bearer token (an ActionRequested's `poa`; a
   PoaIssued stored before 0002) are redacted as the sink redacts new ones
   (audit_sink/domain/tokens.py): the token becomes its `sha256:` digest (a
   PoaIssued's token, empty), `redacted` is set and `received_sha256` holds the
   digest of the original bytes. Their leaf hashes do not change. For every
   1,000 redacted rows a redaction record (an AuditEvent `audit_redacted`, at
   `atb-audit-store:redactions`/0/k, a position no Kafka record can have) is
   appended as a new leaf: per row, the original digest and length, which the old
   leaf commits to, and the digest and length of the bytes stored now. The
   verifier rebuilds the old leaf from the row and the record, and the record, once
   a checkpoint covers it, fixes the stored bytes (docs/audit.md).

The store refuses UPDATE for every role: this revision, run as the owner, lifts the
UPDATE trigger of `audit_events` and restores it in its own transaction (SQLite:
drop and re-create it; PostgreSQL: DISABLE / ENABLE TRIGGER, transactional), under
the sink's writer lock, so no sink appends between the tip read here and the new leaves.

Revision ID: 0006
Revises: 0005
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BATCH = 2000
_PER_RECORD = 1000  # ~200 bytes an entry: a record stays far below MAX_EVENT_BYTES
_WRITER_LOCK = 0x41544241  # the sink's pg_advisory_xact_lock key (audit_sink/adapters/db.py)
_SOURCE = "spiffe://atb.local/audit-sink/migrations"
_SIEM = (
    "CREATE VIEW audit_siem AS SELECT seq, leaf_idx, topic, \"partition\", \"offset\", event_id,"
    " COALESCE(audit_type, event_type) AS event_type, event_type AS ce_type, audit_type, request_id,"
    " producer, occurred_at, recorded_at, retain_until, redacted, received_sha256, raw FROM audit_events"
)


def upgrade() -> None:
    # Plain ALTER TABLE, not alembic's batch mode: on SQLite that would copy the table and drop its triggers.
    op.add_column("audit_events", sa.Column("audit_type", sa.String(64), nullable=True))
    op.create_index("ix_audit_events_audit_type", "audit_events", ["audit_type"])
    op.execute(_SIEM)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITER_LOCK})
        _grant_view()
    with _updates_allowed(bind):
        entries, retain = _rewrite_rows(bind)
        _append_records(bind, entries, retain)


@contextmanager
def _updates_allowed(bind: sa.Connection) -> Iterator[None]:
    """The UPDATE trigger of audit_events off, inside this transaction only."""
    if bind.dialect.name == "postgresql":
        bind.execute(sa.text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update"))
        yield
        bind.execute(sa.text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update"))
        return
    (sql,) = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'audit_events_no_update'")
    ).one()
    bind.execute(sa.text("DROP TRIGGER audit_events_no_update"))
    yield
    bind.execute(sa.text(sql))


def _events() -> sa.TableClause:
    when = sa.DateTime(timezone=True)
    return sa.table(
        "audit_events",
        sa.column("seq", sa.Integer),
        sa.column("topic", sa.String),
        sa.column("partition", sa.Integer),
        sa.column("offset", sa.BigInteger),
        sa.column("event_id", sa.String),
        sa.column("event_type", sa.String),
        sa.column("request_id", sa.String),
        sa.column("producer", sa.String),
        sa.column("occurred_at", when),
        sa.column("recorded_at", when),
        sa.column("retain_until", when),
        sa.column("record_key", sa.LargeBinary),
        sa.column("raw", sa.LargeBinary),
        sa.column("decode_error", sa.Text),
        sa.column("redacted", sa.Boolean),
        sa.column("received_sha256", sa.String),
        sa.column("received_len", sa.BigInteger),
        sa.column("audit_type", sa.String),
        sa.column("leaf_idx", sa.BigInteger),
        sa.column("leaf_hash", sa.LargeBinary),
    )


def _rewrite_rows(bind: sa.Connection) -> tuple[list[object], datetime | None]:
    """Audit names for AuditEvents, redaction for token carriers; the redaction entries, and their latest retention."""
    from audit_sink.domain.redaction import RedactionEntry
    from audit_sink.domain.tokens import audit_name, redact, sha256_text
    from contracts import ActionRequested, AuditEvent, PoaIssued

    events = _events()
    tree = sa.table(
        "audit_tree",
        sa.column("idx", sa.BigInteger),
        sa.column("topic", sa.String),
        sa.column("partition", sa.Integer),
        sa.column("offset", sa.BigInteger),
    )
    kinds = (AuditEvent.event_type, PoaIssued.event_type, ActionRequested.event_type)
    joined = events.join(
        tree,
        sa.and_(
            tree.c.topic == events.c.topic,
            tree.c.partition == events.c.partition,
            tree.c.offset == events.c.offset,
        ),
    )
    columns = (
        events.c.seq,
        tree.c.idx,
        events.c.event_type,
        events.c.raw,
        events.c.redacted,
        events.c.received_len,
        events.c.retain_until,
    )
    entries: list[object] = []
    retain: datetime | None = None
    last = -1
    while True:
        batch = bind.execute(
            sa.select(*columns)
            .select_from(joined)
            .where(events.c.seq > last, events.c.event_type.in_(kinds))
            .order_by(events.c.seq)
            .limit(_BATCH)
        ).all()
        if not batch:
            return entries, retain
        names, redactions = [], []
        for seq, index, event_type, raw, redacted, received_len, retain_until in batch:
            raw = bytes(raw)
            if (name := audit_name(event_type, raw)) is not None:
                names.append({"b_seq": seq, "b_name": name})
            if redacted or received_len is not None or (stored := redact(event_type, raw)) is None:
                continue
            redactions.append({"b_seq": seq, "b_raw": stored, "b_received": sha256_text(raw)})
            entries.append(RedactionEntry(int(index), sha256_text(raw), len(raw), sha256_text(stored), len(stored)))
            until = retain_until if retain_until.tzinfo else retain_until.replace(tzinfo=UTC)
            retain = until if retain is None else max(retain, until)
        if names:
            bind.execute(
                events.update().where(events.c.seq == sa.bindparam("b_seq")).values(audit_type=sa.bindparam("b_name")),
                names,
            )
        if redactions:
            bind.execute(
                events.update()
                .where(events.c.seq == sa.bindparam("b_seq"))
                .values(raw=sa.bindparam("b_raw"), redacted=True, received_sha256=sa.bindparam("b_received")),
                redactions,
            )
        last = batch[-1][0]


def _append_records(bind: sa.Connection, entries: list[object], retain: datetime | None) -> None:
    """One redaction record per _PER_RECORD entries, each a new leaf at the tip of the tree."""
    if not entries or retain is None:
        return
    from audit_sink.domain.leaf import leaf_bytes
    from audit_sink.domain.merkle import leaf_hash
    from audit_sink.domain.redaction import REDACTION_AUDIT_TYPE, REDACTION_TOPIC, redaction_details
    from audit_sink.domain.retention import RetentionPolicy
    from audit_sink.domain.rows import RecordMeta, row_for
    from contracts import AuditEvent, encode_envelope, make_envelope

    tip = bind.execute(
        sa.text("SELECT (SELECT max(leaf_idx) FROM audit_events), (SELECT max(idx) FROM audit_leaves)")
    ).one()
    first = max((int(top) + 1 for top in tip if top is not None), default=0)
    now = datetime.now(UTC)
    values = []
    for number, start in enumerate(range(0, len(entries), _PER_RECORD)):
        payload = AuditEvent(
            audit_type=REDACTION_AUDIT_TYPE,
            actor=_SOURCE,
            outcome="info",
            reason="bearer tokens are kept only as their SHA-256 digest",
            details=redaction_details(
                entries[start : start + _PER_RECORD],  # type: ignore[arg-type]
                reason="ActionRequested.poa and PoaIssued.token replaced by their digest",
                migration=revision,
            ),
            occurred_at=now,
        )
        raw = encode_envelope(make_envelope(payload, source=_SOURCE, time=now))
        meta = RecordMeta(REDACTION_TOPIC, 0, number, None, raw, int(now.timestamp() * 1000))
        row = row_for(meta, recorded_at=now, retention=RetentionPolicy())
        # Kept while any row it redacted can be: retention no shorter than theirs.
        row = row._replace(retain_until=max(row.retain_until, retain))
        value = dict(row._asdict())
        value.update(leaf_idx=first + number, leaf_hash=leaf_hash(leaf_bytes(row)))
        values.append(value)
    bind.execute(_events().insert(), values)


def _grant_view() -> None:
    writer = os.environ.get("ATB_AUDIT_WRITER_ROLE", "atb_audit_writer")
    purger = os.environ.get("ATB_AUDIT_PURGER_ROLE", "atb_audit_purger")
    for role in (writer, purger):
        op.execute(
            f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
            f" THEN GRANT SELECT ON audit_siem TO {role}; END IF; END $$"
        )


def downgrade() -> None:
    raise RuntimeError("revision 0006 (token hashes) cannot be downgraded: the tokens are gone")
