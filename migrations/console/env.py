"""Alembic environment of the console's store (run by `console.adapters.store.migrate`)."""

from atb_runtime.migrate import run_env

run_env(version_table="alembic_version_console")
