"""Chat store: Microsoft Teams: activity ids received (replays refused) and the posted cards.

- `teams_activities`: every inbound activity id, once: a replayed activity is refused.
- `teams_cards`: each request's card per conversation: its activity id, the
  serviceUrl it is updated at, and the hash of what it shows.

Revision ID: chat_0003
Revises: chat_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "chat_0003"
down_revision = "chat_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams_activities",
        sa.Column("activity_id", sa.Text, primary_key=True),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    op.create_table(
        "teams_cards",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("activity_id", sa.Text, nullable=False),
        sa.Column("service_url", sa.Text, nullable=False),
        sa.Column("card_hash", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("teams_cards")
    op.drop_table("teams_activities")
