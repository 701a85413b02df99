"""An index on `audit_events.occurred_at`: the compliance search by time range without a full scan.

The console's search (console/adapters/audit.py) filters on request id, event
type, audit name, producer and an occurred-at range, newest first. The first
four are selective on their own; a range alone read every row (bench/console_search.py:
140 ms on SQLite at 100,000 events, growing with the store). With this index a
narrow window reads only its rows. Only an index: no row, leaf or trigger changes.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_occurred_at", "audit_events")
