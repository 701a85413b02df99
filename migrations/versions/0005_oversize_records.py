"""Oversize records are stored as a prefix: `received_len` on `audit_events`.

A record above `AUDIT_MAX_STORED_BYTES` (contracts/limits.py) keeps its first
`AUDIT_PREFIX_BYTES` in `raw`; `received_sha256` (since 0002) holds the digest
of the full record and `received_len` its length. NULL means `raw` is all that
was received (or, with `redacted`, the record minus its token). The row's leaf
commits to both (audit_sink/domain/leaf.py). Covered by the triggers that refuse
UPDATE on `audit_events`.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE, not alembic's batch mode: on SQLite that would copy the table
    # and drop its triggers.
    op.add_column("audit_events", sa.Column("received_len", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("audit_events", "received_len")
