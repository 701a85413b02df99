"""Console store: passkey credentials, enrollment links, sessions, WebAuthn challenges, console votes.

Revision ID: console_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "console_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("credential_id", sa.Text, primary_key=True),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False),
        sa.Column("rp_id", sa.Text, nullable=False),
        sa.Column("user_verified", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("revoked_by", sa.Text, nullable=True),
    )
    op.create_index("credentials_principal", "credentials", ["principal"])
    op.create_table(
        "enrollments",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "sessions",
        sa.Column("session_hash", sa.Text, primary_key=True),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("csrf", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
    )
    op.create_table(
        "challenges",
        sa.Column("nonce", sa.Text, primary_key=True),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("challenge", sa.LargeBinary, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "votes",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("principal", sa.Text, primary_key=True),
        sa.Column("choice", sa.Text, nullable=False),
        sa.Column("vote_id", sa.Text, nullable=False),
        sa.Column("cast_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("votes")
    op.drop_table("challenges")
    op.drop_table("sessions")
    op.drop_table("enrollments")
    op.drop_index("credentials_principal", "credentials")
    op.drop_table("credentials")
