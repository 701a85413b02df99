"""Hot retention: a row may leave the store once it is archived and the archive verified.

`audit_archive_seals` (append-only like every audit table) records each time the
purge path verified the archive (docs/archive.md): where, how many leaves it
holds (`tree_end`), their root, the digest of its newest manifest, when. The
delete and tombstone triggers of revision 0003 then also let through a row whose
leaf index is below the largest recorded `tree_end` and that no active legal
hold covers, whatever its `retain_until`: its exact bytes are in the archive,
locked there for 7 years. Everything else about the purge path is unchanged
(tombstone first, signed purge record). The purger may INSERT and SELECT seals;
the writer may SELECT them.

Revision ID: 0008
Revises: 0007
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLE = "audit_archive_seals"
_REFUSED = "atb audit store is append-only"

# The leaf index of a row: its own (revision 0004 on), else the one 0003 kept in audit_leaves.
_LEAF = (
    "COALESCE({e}.leaf_idx, (SELECT l.idx FROM audit_leaves l WHERE l.topic = {e}.topic"
    ' AND l."partition" = {e}."partition" AND l."offset" = {e}."offset"))'
)
_ARCHIVED = "{leaf} < COALESCE((SELECT max(s.tree_end) FROM audit_archive_seals s), 0)"
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_SQLITE_NOT_HELD = """NOT EXISTS (
    SELECT 1 FROM audit_legal_holds h
    WHERE NOT EXISTS (SELECT 1 FROM audit_legal_hold_releases r WHERE r.hold_id = h.id)
      AND ((h.request_id IS NOT NULL AND h.request_id = {e}.request_id)
        OR (h.request_id IS NULL AND {e}.occurred_at >= h.range_from AND {e}.occurred_at < h.range_until)))"""


def _sqlite_purgeable(e: str) -> str:
    archived = _ARCHIVED.format(leaf=_LEAF.format(e=e))
    return f"(({e}.retain_until < {_SQLITE_NOW} OR {archived}) AND {_SQLITE_NOT_HELD.format(e=e)})"


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("location", sa.String(1024), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("tree_end", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres()
        return
    _sqlite()


def _postgres() -> None:
    leaf = _LEAF.format(e="OLD")
    op.execute(
        f"""
        CREATE TRIGGER {_TABLE}_no_change BEFORE UPDATE OR DELETE ON {_TABLE}
          FOR EACH ROW EXECUTE FUNCTION atb_audit_refuse();
        CREATE TRIGGER {_TABLE}_no_truncate BEFORE TRUNCATE ON {_TABLE}
          FOR EACH STATEMENT EXECUTE FUNCTION atb_audit_refuse();
        CREATE FUNCTION atb_audit_archived(p_leaf bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
          SELECT p_leaf IS NOT NULL AND p_leaf < COALESCE((SELECT max(s.tree_end) FROM {_TABLE} s), 0)
        $$;
        CREATE OR REPLACE FUNCTION atb_audit_event_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM audit_tombstones t WHERE t.topic = OLD.topic
                       AND t."partition" = OLD."partition" AND t."offset" = OLD."offset")
             AND (atb_audit_purgeable(OLD.request_id, OLD.occurred_at, OLD.retain_until)
                  OR (atb_audit_archived({leaf})
                      AND atb_audit_purgeable(OLD.request_id, OLD.occurred_at, '-infinity'))) THEN
            RETURN OLD;
          END IF;
          RAISE EXCEPTION '{_REFUSED}: DELETE of row % refused (no tombstone, not archived and retention not over,'
            ' or legal hold)', OLD.seq USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE OR REPLACE FUNCTION atb_audit_tombstone_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM audit_events e WHERE e.topic = NEW.topic AND e."partition" = NEW."partition"
                       AND e."offset" = NEW."offset"
                       AND (atb_audit_purgeable(e.request_id, e.occurred_at, e.retain_until)
                            OR (atb_audit_archived({_LEAF.format(e="e")})
                                AND atb_audit_purgeable(e.request_id, e.occurred_at, '-infinity')))) THEN
            RETURN NEW;
          END IF;
          RAISE EXCEPTION 'tombstone for leaf % refused: no such row, not archived and retention not over,'
            ' or legal hold', NEW.leaf_idx USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    writer = os.environ.get("ATB_AUDIT_WRITER_ROLE", "atb_audit_writer")
    purger = os.environ.get("ATB_AUDIT_PURGER_ROLE", "atb_audit_purger")
    grants = {
        writer: [f"GRANT SELECT ON {_TABLE} TO {writer}"],
        purger: [
            f"GRANT SELECT, INSERT ON {_TABLE} TO {purger}",
            f"GRANT USAGE ON SEQUENCE {_TABLE}_id_seq TO {purger}",
        ],
    }
    for role, statements in grants.items():
        body = "; ".join(statements)
        op.execute(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN {body}; END IF; END $$")


def _sqlite() -> None:
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {_TABLE}_no_{operation.lower()} BEFORE {operation} ON {_TABLE}"
            f" BEGIN SELECT RAISE(ABORT, '{_REFUSED}: {operation} on {_TABLE} refused'); END"
        )
    op.execute("DROP TRIGGER audit_events_purge_only")
    op.execute(
        f"""CREATE TRIGGER audit_events_purge_only BEFORE DELETE ON audit_events
        WHEN NOT (EXISTS (SELECT 1 FROM audit_tombstones t WHERE t.topic = OLD.topic
                   AND t."partition" = OLD."partition" AND t."offset" = OLD."offset") AND {_sqlite_purgeable("OLD")})
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE on audit_events refused (no tombstone, not archived and
          retention not over, or legal hold)'); END"""
    )
    op.execute("DROP TRIGGER audit_tombstones_check")
    op.execute(
        f"""CREATE TRIGGER audit_tombstones_check BEFORE INSERT ON audit_tombstones
        WHEN NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.topic = NEW.topic
                   AND e."partition" = NEW."partition" AND e."offset" = NEW."offset" AND {_sqlite_purgeable("e")})
        BEGIN SELECT RAISE(ABORT, 'tombstone refused: no such row, not archived and retention not over,
          or legal hold'); END"""
    )


def downgrade() -> None:
    raise RuntimeError("revision 0008 (archive seals, append-only) cannot be downgraded")
