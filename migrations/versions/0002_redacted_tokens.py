"""Audit rows may be redacted: PoA tokens are kept only as their hash.

A PoaIssued carries the bearer token the agent needs; the audit store keeps the
event with the token removed (its `token_sha256` stays in the payload) and the
SHA-256 of the exact bytes received, so the original can still be matched.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("redacted", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("received_sha256", sa.String(71)))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("received_sha256")
        batch.drop_column("redacted")
