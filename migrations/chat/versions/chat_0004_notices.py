"""Chat store: direct messages sent (reminders, escalations, outcomes), each once.

- `notices`: every direct message claimed before it is sent, by its notice id
  (`chat.domain.notices`): a redelivered or replayed event sends nothing twice.

Revision ID: chat_0004
Revises: chat_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "chat_0004"
down_revision = "chat_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("notice_id", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notices")
