"""Audit store: the events table and the consumer offsets kept with it.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(255)),
        sa.Column("producer", sa.String(2048)),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retain_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_key", sa.LargeBinary),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("decode_error", sa.Text),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_audit_events_position"),
    )
    op.create_index("ix_audit_events_request_id", "audit_events", ["request_id"])
    op.create_index("ix_audit_events_event_id", "audit_events", ["event_id"])
    op.create_table(
        "audit_consumer_offsets",
        sa.Column("group_id", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_consumer_offsets")
    op.drop_index("ix_audit_events_event_id", "audit_events")
    op.drop_index("ix_audit_events_request_id", "audit_events")
    op.drop_table("audit_events")
