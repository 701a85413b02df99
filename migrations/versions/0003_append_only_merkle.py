"""Append-only, tamper-evident audit store: Merkle leaves, checkpoints, legal holds, purges.

* `audit_leaves`: one RFC 6962 leaf hash per stored row, in insertion order,
  keyed by the row's Kafka position. Never purged: a purge removes a row but its
  leaf stays, so old checkpoints still verify (docs/audit.md).
* `audit_checkpoints`: every signed checkpoint (C2SP tlog-checkpoint note).
* `audit_legal_holds` / `audit_legal_hold_releases`: holds by request id or by
  occurred-at range; a release is a new row, never an edit.
* `audit_purges` / `audit_tombstones`: what each purge removed (signed record,
  and per leaf the leaf text, so the leaf hash can still be recomputed).

Triggers refuse UPDATE, DELETE and TRUNCATE on every one of these tables and on
`audit_events`, for every role including the owner. The one exception: a DELETE
of an `audit_events` row whose tombstone exists, whose `retain_until` has passed
and that no active legal hold covers (the purge path); the tombstone insert is
itself refused unless the row qualifies. On PostgreSQL the audit sink's role gets
INSERT/SELECT only, the purger role DELETE on `audit_events` and INSERT on the
hold/purge tables (roles from ATB_AUDIT_WRITER_ROLE / ATB_AUDIT_PURGER_ROLE,
granted only if they exist: roles are cluster objects, created by the DBA).

Existing rows (stores from revisions 0001/0002) get their leaves here, in `seq` order.

Revision ID: 0003
Revises: 0002
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APPEND_ONLY = (
    "audit_leaves",
    "audit_checkpoints",
    "audit_legal_holds",
    "audit_legal_hold_releases",
    "audit_purges",
    "audit_tombstones",
)
_REFUSED = "atb audit store is append-only"


def upgrade() -> None:
    _tables()
    _backfill_leaves()
    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
        _postgres_grants()
    else:
        _sqlite_triggers()


def _tables() -> None:
    op.create_table(
        "audit_leaves",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_audit_leaves_position"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_legal_holds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(255)),
        sa.Column("range_from", sa.DateTime(timezone=True)),
        sa.Column("range_until", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("placed_by", sa.String(255), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(request_id IS NOT NULL AND range_from IS NULL AND range_until IS NULL)"
            " OR (request_id IS NULL AND range_from IS NOT NULL AND range_until IS NOT NULL)",
            name="ck_audit_legal_holds_scope",
        ),
    )
    op.create_table(
        "audit_legal_hold_releases",
        sa.Column("hold_id", sa.Integer, sa.ForeignKey("audit_legal_holds.id"), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("released_by", sa.String(255), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_purges",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purged_by", sa.String(255), nullable=False),
        sa.Column("removed", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_tombstones",
        sa.Column("leaf_idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("purge_id", sa.String(64), sa.ForeignKey("audit_purges.id"), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("leaf", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_audit_events_retain_until", "audit_events", ["retain_until"])


def _backfill_leaves() -> None:
    """Leaves for rows stored before this revision, in insertion order."""
    from audit_sink.domain.leaf import leaf_bytes
    from audit_sink.domain.merkle import leaf_hash
    from audit_sink.domain.rows import AuditRow

    bind = op.get_bind()
    # Typed columns, so that SQLite's stored text comes back as datetimes and booleans.
    when = sa.DateTime(timezone=True)
    events = sa.table(
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
    )
    names = (
        "topic",
        "partition",
        "offset",
        "event_id",
        "event_type",
        "request_id",
        "producer",
        "occurred_at",
        "recorded_at",
        "retain_until",
        "record_key",
        "raw",
        "decode_error",
        "redacted",
        "received_sha256",
    )
    query = sa.select(*(events.c[name] for name in names)).order_by(events.c.seq)
    leaves = []
    for index, row in enumerate(bind.execute(query)):
        audit_row = AuditRow(*row[:-2], redacted=bool(row[-2]), received_sha256=row[-1])
        position = {"topic": row[0], "partition": row[1], "offset": row[2]}
        leaves.append({"idx": index, **position, "leaf_hash": leaf_hash(leaf_bytes(audit_row))})
    if leaves:
        table = sa.table(
            "audit_leaves",
            sa.column("idx"),
            sa.column("topic"),
            sa.column("partition"),
            sa.column("offset"),
            sa.column("leaf_hash"),
        )
        op.bulk_insert(table, leaves)


def _postgres_triggers() -> None:
    op.execute(
        f"""
        CREATE FUNCTION atb_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '{_REFUSED}: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE FUNCTION atb_audit_purgeable(p_request text, p_occurred timestamptz, p_retain timestamptz)
        RETURNS boolean LANGUAGE sql STABLE AS $$
          SELECT p_retain < now() AND NOT EXISTS (
            SELECT 1 FROM audit_legal_holds h
            WHERE NOT EXISTS (SELECT 1 FROM audit_legal_hold_releases r WHERE r.hold_id = h.id)
              AND ((h.request_id IS NOT NULL AND h.request_id = p_request)
                OR (h.request_id IS NULL AND p_occurred >= h.range_from AND p_occurred < h.range_until)))
        $$;
        CREATE FUNCTION atb_audit_event_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM audit_tombstones t WHERE t.topic = OLD.topic
                       AND t."partition" = OLD."partition" AND t."offset" = OLD."offset")
             AND atb_audit_purgeable(OLD.request_id, OLD.occurred_at, OLD.retain_until) THEN
            RETURN OLD;
          END IF;
          RAISE EXCEPTION '{_REFUSED}: DELETE of row % refused (no tombstone, retention not over, or legal hold)',
            OLD.seq USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE FUNCTION atb_audit_tombstone_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM audit_events e WHERE e.topic = NEW.topic AND e."partition" = NEW."partition"
                       AND e."offset" = NEW."offset"
                       AND atb_audit_purgeable(e.request_id, e.occurred_at, e.retain_until)) THEN
            RETURN NEW;
          END IF;
          RAISE EXCEPTION 'tombstone for leaf % refused: no such row, retention not over, or legal hold',
            NEW.leaf_idx USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
          FOR EACH ROW EXECUTE FUNCTION atb_audit_refuse();
        CREATE TRIGGER audit_events_purge_only BEFORE DELETE ON audit_events
          FOR EACH ROW EXECUTE FUNCTION atb_audit_event_delete();
        CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
          FOR EACH STATEMENT EXECUTE FUNCTION atb_audit_refuse();
        CREATE TRIGGER audit_tombstones_check BEFORE INSERT ON audit_tombstones
          FOR EACH ROW EXECUTE FUNCTION atb_audit_tombstone_check();
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION atb_audit_refuse();"
            f" CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION atb_audit_refuse();"
        )


def _postgres_grants() -> None:
    writer = os.environ.get("ATB_AUDIT_WRITER_ROLE", "atb_audit_writer")
    purger = os.environ.get("ATB_AUDIT_PURGER_ROLE", "atb_audit_purger")
    everything = ["audit_events", "audit_consumer_offsets", "alembic_version", *APPEND_ONLY]
    grants = {
        writer: [
            f"GRANT SELECT ON {', '.join(everything)} TO {writer}",
            f"GRANT INSERT ON audit_events, audit_leaves, audit_checkpoints TO {writer}",
            f"GRANT INSERT, UPDATE ON audit_consumer_offsets TO {writer}",
            f"GRANT USAGE ON SEQUENCE audit_events_seq_seq, audit_checkpoints_id_seq TO {writer}",
        ],
        purger: [
            f"GRANT SELECT ON {', '.join(everything)} TO {purger}",
            f"GRANT DELETE ON audit_events TO {purger}",
            f"GRANT INSERT ON audit_purges, audit_tombstones, audit_legal_holds, audit_legal_hold_releases TO {purger}",
            f"GRANT USAGE ON SEQUENCE audit_legal_holds_id_seq TO {purger}",
        ],
    }
    for role, statements in grants.items():
        body = "; ".join(statements)
        op.execute(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN {body}; END IF; END $$")


_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_SQLITE_PURGEABLE = f"""
  {{e}}.retain_until < {_SQLITE_NOW} AND NOT EXISTS (
    SELECT 1 FROM audit_legal_holds h
    WHERE NOT EXISTS (SELECT 1 FROM audit_legal_hold_releases r WHERE r.hold_id = h.id)
      AND ((h.request_id IS NOT NULL AND h.request_id = {{e}}.request_id)
        OR (h.request_id IS NULL AND {{e}}.occurred_at >= h.range_from AND {{e}}.occurred_at < h.range_until)))
"""


def _sqlite_triggers() -> None:
    # SQLite has no TRUNCATE: `DELETE FROM t` without WHERE is the truncate optimisation,
    # which SQLite turns off for a table with a DELETE trigger, so the triggers cover it.
    op.execute(
        f"CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events"
        f" BEGIN SELECT RAISE(ABORT, '{_REFUSED}: UPDATE on audit_events refused'); END"
    )
    purgeable = _SQLITE_PURGEABLE.format(e="OLD")
    op.execute(
        f"""CREATE TRIGGER audit_events_purge_only BEFORE DELETE ON audit_events
        WHEN NOT (EXISTS (SELECT 1 FROM audit_tombstones t WHERE t.topic = OLD.topic
                   AND t."partition" = OLD."partition" AND t."offset" = OLD."offset") AND {purgeable})
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE on audit_events refused (no tombstone, retention not over,
          or legal hold)'); END"""
    )
    purgeable = _SQLITE_PURGEABLE.format(e="e")
    op.execute(
        f"""CREATE TRIGGER audit_tombstones_check BEFORE INSERT ON audit_tombstones
        WHEN NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.topic = NEW.topic
                   AND e."partition" = NEW."partition" AND e."offset" = NEW."offset" AND {purgeable})
        BEGIN SELECT RAISE(ABORT, 'tombstone refused: no such row, retention not over, or legal hold'); END"""
    )
    for table in APPEND_ONLY:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{_REFUSED}: {operation} on {table} refused'); END"
            )


def downgrade() -> None:
    # An append-only store is not downgraded: dropping its triggers is what the triggers exist to prevent.
    raise RuntimeError("revision 0003 (append-only audit store) cannot be downgraded")
