"""A row carries its own Merkle leaf: `leaf_idx` and `leaf_hash` on `audit_events`.

Until 0003 every stored row took a second row in `audit_leaves` (index, position,
hash) with a second unique index on the same position. From here a new row
carries its leaf index and hash itself: one row and one index entry fewer per
event (bench/audit_ingest.py). `audit_leaves` keeps the leaves it has (rows stored
before this revision) and receives the leaf of every row a purge removes, so
leaves outlive their rows as before; `audit_tree` is the union, the one place
readers take leaves from. Both columns are covered by the triggers that already
refuse UPDATE on `audit_events`.

Revision ID: 0004
Revises: 0003
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TREE = (
    'CREATE VIEW audit_tree AS SELECT idx, topic, "partition", "offset", leaf_hash FROM audit_leaves'
    ' UNION ALL SELECT leaf_idx, topic, "partition", "offset", leaf_hash FROM audit_events'
    " WHERE leaf_idx IS NOT NULL"
)


def upgrade() -> None:
    # Plain ALTER TABLE, not alembic's batch mode: on SQLite that would copy the table
    # and drop its triggers.
    op.add_column("audit_events", sa.Column("leaf_idx", sa.BigInteger, nullable=True))
    op.add_column("audit_events", sa.Column("leaf_hash", sa.LargeBinary(32), nullable=True))
    op.create_index("uq_audit_events_leaf_idx", "audit_events", ["leaf_idx"], unique=True)
    op.execute(_TREE)
    if op.get_bind().dialect.name == "postgresql":
        writer = os.environ.get("ATB_AUDIT_WRITER_ROLE", "atb_audit_writer")
        purger = os.environ.get("ATB_AUDIT_PURGER_ROLE", "atb_audit_purger")
        for role, statements in {
            writer: [f"GRANT SELECT ON audit_tree TO {writer}"],
            purger: [f"GRANT SELECT ON audit_tree TO {purger}", f"GRANT INSERT ON audit_leaves TO {purger}"],
        }.items():
            body = "; ".join(statements)
            op.execute(
                f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN {body}; END IF; END $$"
            )


def downgrade() -> None:
    raise RuntimeError("revision 0004 (leaves in rows) cannot be downgraded: the append-only store keeps its leaves")
