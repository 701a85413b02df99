"""Search facets beside the rows: agent, action, tier and outcome, indexed (`audit_event_facets`).

The compliance search (console) filters on an event's agent, action, tier and
outcome, values that live only inside the stored JSON. `audit_events` is never
updated (append-only triggers; a row's leaf commits to its bytes), so they go in a
side table, one row per event that has any (audit_sink/domain/facets.py says which
event gives which), keyed by the event's `seq`. The sink inserts them in the same
transaction as the rows; this revision fills them in for the rows already stored,
from their stored bytes, in `seq` order.

The table is append-only like the others: UPDATE and TRUNCATE are refused, and a
DELETE only once its event row is gone. A trigger on `audit_events` deletes a
row's facets when the purge path deletes the row (retention or hot purge), so no
facet outlives its event; the purger may DELETE facets for that, the writer
INSERT and SELECT them. Not part of any leaf: the verifier can recompute them from
the bytes the leaves commit to.

Revision ID: 0010
Revises: 0009
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TABLE = "audit_event_facets"
_REFUSED = "atb audit store is append-only"
_FACETS = ("agent_id", "action", "tier", "outcome")
_BATCH = 2000
_WRITER_LOCK = 0x41544241  # the sink's pg_advisory_xact_lock key (audit_sink/adapters/db.py)


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("action", sa.String(128)),
        sa.Column("tier", sa.String(16)),
        sa.Column("outcome", sa.String(32)),
    )
    # One index per facet, with `seq`: a search pages newest first on the index alone.
    for facet in _FACETS:
        op.create_index(f"ix_{_TABLE}_{facet}", _TABLE, [facet, "seq"])
    _backfill()
    if op.get_bind().dialect.name == "postgresql":
        _postgres()
    else:
        _sqlite()


def _backfill() -> None:
    from audit_sink.domain.facets import FACET_EVENT_TYPES, facets_of

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # no sink append is left without its facets
        bind.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITER_LOCK})
    events = sa.table("audit_events", sa.column("seq"), sa.column("event_type"), sa.column("raw"))
    facets = sa.table(_TABLE, sa.column("seq"), *(sa.column(name) for name in _FACETS))
    after = -1
    while True:
        query = (
            sa.select(events.c.seq, events.c.event_type, events.c.raw)
            .where(events.c.seq > after, events.c.event_type.in_(sorted(FACET_EVENT_TYPES)))
            .order_by(events.c.seq)
            .limit(_BATCH)
        )
        batch = bind.execute(query).all()
        if not batch:
            return
        values = []
        for seq, event_type, raw in batch:
            found = facets_of(event_type, bytes(raw))
            if found:
                values.append({"seq": int(seq), **found._asdict()})
        if values:
            bind.execute(facets.insert(), values)
        after = int(batch[-1][0])


def _postgres() -> None:
    op.execute(
        f"""
        CREATE FUNCTION atb_audit_facet_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM audit_events e WHERE e.seq = OLD.seq) THEN
            RAISE EXCEPTION '{_REFUSED}: DELETE of the facets of row % refused (the row is stored)', OLD.seq
              USING ERRCODE = 'insufficient_privilege';
          END IF;
          RETURN OLD;
        END $$;
        CREATE FUNCTION atb_audit_facets_follow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          DELETE FROM {_TABLE} WHERE seq = OLD.seq;
          RETURN NULL;
        END $$;
        CREATE TRIGGER {_TABLE}_no_update BEFORE UPDATE ON {_TABLE}
          FOR EACH ROW EXECUTE FUNCTION atb_audit_refuse();
        CREATE TRIGGER {_TABLE}_no_truncate BEFORE TRUNCATE ON {_TABLE}
          FOR EACH STATEMENT EXECUTE FUNCTION atb_audit_refuse();
        CREATE TRIGGER {_TABLE}_purge_only BEFORE DELETE ON {_TABLE}
          FOR EACH ROW EXECUTE FUNCTION atb_audit_facet_delete();
        CREATE TRIGGER audit_events_facets_follow AFTER DELETE ON audit_events
          FOR EACH ROW EXECUTE FUNCTION atb_audit_facets_follow();
        """
    )
    writer = os.environ.get("ATB_AUDIT_WRITER_ROLE", "atb_audit_writer")
    purger = os.environ.get("ATB_AUDIT_PURGER_ROLE", "atb_audit_purger")
    grants = {
        writer: [f"GRANT SELECT, INSERT ON {_TABLE} TO {writer}"],
        purger: [f"GRANT SELECT, DELETE ON {_TABLE} TO {purger}"],
    }
    for role, statements in grants.items():
        body = "; ".join(statements)
        op.execute(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN {body}; END IF; END $$")


def _sqlite() -> None:
    op.execute(
        f"CREATE TRIGGER {_TABLE}_no_update BEFORE UPDATE ON {_TABLE}"
        f" BEGIN SELECT RAISE(ABORT, '{_REFUSED}: UPDATE on {_TABLE} refused'); END"
    )
    op.execute(
        f"""CREATE TRIGGER {_TABLE}_purge_only BEFORE DELETE ON {_TABLE}
        WHEN EXISTS (SELECT 1 FROM audit_events e WHERE e.seq = OLD.seq)
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE on {_TABLE} refused (the row is stored)'); END"""
    )
    op.execute(
        f"""CREATE TRIGGER audit_events_facets_follow AFTER DELETE ON audit_events
        BEGIN DELETE FROM {_TABLE} WHERE seq = OLD.seq; END"""
    )


def downgrade() -> None:
    raise RuntimeError("revision 0010 (event facets, append-only) cannot be downgraded")
