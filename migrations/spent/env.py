"""Alembic environment of the broker's spent store and outbox (run by `broker.adapters.spent.migrate`)."""

from atb_runtime.migrate import run_env

run_env(version_table="alembic_version_spent")
