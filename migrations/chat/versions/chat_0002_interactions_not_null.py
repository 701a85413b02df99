"""Chat store: `interactions` as the store declares it on SQLite too (trigger_id NOT NULL, received_at FLOAT).

The raw DDL before alembic declared `trigger_id TEXT PRIMARY KEY`, which SQLite
lets hold NULL, and `received_at REAL`. SQLite alters neither in place: the
table is rebuilt (batch mode), its rows copied, inside the migration's
transaction. PostgreSQL never had that schema (primary keys are NOT NULL there):
nothing to do.

Revision ID: chat_0002
Revises: chat_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "chat_0002"
down_revision = "chat_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("interactions", recreate="always") as batch:
        batch.alter_column("trigger_id", existing_type=sa.Text, nullable=False)
        batch.alter_column("received_at", existing_type=sa.REAL, type_=sa.Float, existing_nullable=False)


def downgrade() -> None:
    pass  # NOT NULL and FLOAT are what revision chat_0001 creates on an empty database as well
