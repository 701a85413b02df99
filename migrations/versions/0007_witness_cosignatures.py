"""Witness cosignatures of the log's checkpoints (C2SP tlog-cosignature), append-only.

One row per checkpoint and witness: the checkpoint's size and root, the witness's
name and key id, the cosignature's timestamp, and `note`, the checkpoint as a
signed note carrying the log's signature and that witness's cosignature (what
`atb audit verify --witness-key` checks). UPDATE and DELETE are refused for every
role, like the other audit tables (revision 0003); the writer (the sink) may
INSERT and SELECT (docs/audit.md, "Witnessed checkpoints").

Revision ID: 0007
Revises: 0006
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLE = "audit_cosignatures"
_REFUSED = "atb audit store is append-only"


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("witness", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("cosigned_at", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tree_size", "root_hash", "key_id", name="uq_audit_cosignatures_checkpoint_key"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # atb_audit_refuse() is revision 0003's.
        op.execute(
            f"CREATE TRIGGER {_TABLE}_no_change BEFORE UPDATE OR DELETE ON {_TABLE}"
            f" FOR EACH ROW EXECUTE FUNCTION atb_audit_refuse();"
            f" CREATE TRIGGER {_TABLE}_no_truncate BEFORE TRUNCATE ON {_TABLE}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION atb_audit_refuse();"
        )
        _grant()
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {_TABLE}_no_{operation.lower()} BEFORE {operation} ON {_TABLE}"
            f" BEGIN SELECT RAISE(ABORT, '{_REFUSED}: {operation} on {_TABLE} refused'); END"
        )


def _grant() -> None:
    writer = os.environ.get("ATB_AUDIT_WRITER_ROLE", "atb_audit_writer")
    purger = os.environ.get("ATB_AUDIT_PURGER_ROLE", "atb_audit_purger")
    grants = {
        writer: [
            f"GRANT SELECT, INSERT ON {_TABLE} TO {writer}",
            f"GRANT USAGE ON SEQUENCE {_TABLE}_id_seq TO {writer}",
        ],
        purger: [f"GRANT SELECT ON {_TABLE} TO {purger}"],
    }
    for role, statements in grants.items():
        body = "; ".join(statements)
        op.execute(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN {body}; END IF; END $$")


def downgrade() -> None:
    raise RuntimeError("revision 0007 (append-only cosignatures) cannot be downgraded")
