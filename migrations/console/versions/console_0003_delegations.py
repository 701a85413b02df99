"""Delegations made in the console, with the delegator's passkey: what the delegations page lists.

The grant itself is an event on atb.keys (`DelegationGranted`, with the delegator's
passkey assertion); this table is the console's own list of what it published,
with the signed envelope (`grant_event`) a delegate's vote in the console embeds.

Revision ID: console_0003
Revises: console_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "console_0003"
down_revision = "console_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delegations",
        sa.Column("delegation_id", sa.Text, primary_key=True),
        sa.Column("delegator", sa.Text, nullable=False),
        sa.Column("delegate", sa.Text, nullable=False),
        sa.Column("tiers", sa.Text, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("granted_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("grant_event", sa.Text, nullable=False),
    )
    op.create_index("delegations_delegator", "delegations", ["delegator"])
    op.create_index("delegations_delegate", "delegations", ["delegate"])


def downgrade() -> None:
    op.drop_table("delegations")
