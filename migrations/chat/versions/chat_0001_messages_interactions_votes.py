"""Chat store: posted messages, seen Slack trigger ids, one chat vote per request and approver.

The schema the chat service created with raw SQLite DDL before alembic managed
it: each table is created only where missing, so such a database is adopted as
it is, rows included. A table that exists with other columns is refused.

Revision ID: chat_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "chat_0001"
down_revision = None
branch_labels = None
depends_on = None


def _adopt(table: str, columns: set[str]) -> bool:
    """True when `table` must be created; False when it exists with exactly these columns."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(table):
        return True
    found = {column["name"] for column in inspector.get_columns(table)}
    if found != columns:
        raise RuntimeError(f"cannot adopt {table}: columns {sorted(found)}, expected {sorted(columns)}")
    return False


def upgrade() -> None:
    if _adopt("messages", {"request_id", "channel", "ts", "card_hash"}):
        op.create_table(
            "messages",
            sa.Column("request_id", sa.Text, primary_key=True),
            sa.Column("channel", sa.Text, primary_key=True),
            sa.Column("ts", sa.Text, nullable=False),
            sa.Column("card_hash", sa.Text, nullable=False),
        )
    if _adopt("interactions", {"trigger_id", "received_at"}):
        op.create_table(
            "interactions",
            sa.Column("trigger_id", sa.Text, primary_key=True),
            sa.Column("received_at", sa.Float, nullable=False),
        )
    if _adopt("votes", {"request_id", "principal", "choice", "vote_id"}):
        op.create_table(
            "votes",
            sa.Column("request_id", sa.Text, primary_key=True),
            sa.Column("principal", sa.Text, primary_key=True),
            sa.Column("choice", sa.Text, nullable=False),
            sa.Column("vote_id", sa.Text, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("votes")
    op.drop_table("interactions")
    op.drop_table("messages")
