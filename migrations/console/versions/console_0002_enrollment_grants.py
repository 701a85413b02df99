"""Enrollment links keep the officer's signed grant that allows them (`atb console enroll --as`).

A link made before this revision has no grant: its enrollment is refused, and the
operator makes a new link.

Revision ID: console_0002
Revises: console_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "console_0002"
down_revision = "console_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("grant_event", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("grant_event")
