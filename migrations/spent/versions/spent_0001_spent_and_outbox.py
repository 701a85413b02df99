"""Spent store: spent PoAs, spent requests and the outbox, as `metadata.create_all` made them.

Each table (and index) is created only where missing, so a database that the
broker created before alembic managed it is adopted as it is, rows included,
even one from before `broker_spent_requests` existed. A table that exists with
other columns is refused rather than adopted.

Revision ID: spent_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "spent_0001"
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


def _index(name: str, table: str, column: str) -> None:
    if name not in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)}:
        op.create_index(name, table, [column])


def upgrade() -> None:
    if _adopt("broker_spent_poas", {"jti", "presentation", "request_id", "agent_id", "spent_at_ms", "expires_at"}):
        op.create_table(
            "broker_spent_poas",
            sa.Column("jti", sa.String(128), primary_key=True),
            sa.Column("presentation", sa.String(300), nullable=False),
            sa.Column("request_id", sa.String(255), nullable=False),
            sa.Column("agent_id", sa.String(2048), nullable=False),
            sa.Column("spent_at_ms", sa.BigInteger, nullable=False),
            sa.Column("expires_at", sa.BigInteger, nullable=False),
        )
    if _adopt("broker_spent_requests", {"request_id", "jti", "expires_at"}):
        op.create_table(
            "broker_spent_requests",
            sa.Column("request_id", sa.String(255), primary_key=True),
            sa.Column("jti", sa.String(128), nullable=False),
            sa.Column("expires_at", sa.BigInteger, nullable=False),
        )
    if _adopt("broker_outbox", {"id", "instance", "created_ms", "records", "published"}):
        op.create_table(
            "broker_outbox",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("instance", sa.String(64), nullable=False),
            sa.Column("created_ms", sa.BigInteger, nullable=False),
            sa.Column("records", sa.LargeBinary, nullable=False),
            sa.Column("published", sa.Boolean, nullable=False, server_default=sa.false()),
        )
    _index("ix_broker_outbox_instance", "broker_outbox", "instance")
    _index("ix_broker_outbox_published", "broker_outbox", "published")


def downgrade() -> None:
    op.drop_index("ix_broker_outbox_published", "broker_outbox")
    op.drop_index("ix_broker_outbox_instance", "broker_outbox")
    op.drop_table("broker_outbox")
    op.drop_table("broker_spent_requests")
    op.drop_table("broker_spent_poas")
