"""Alembic environment of the chat service's store (run by `chat.adapters.store.migrate`)."""

from atb_runtime.migrate import run_env

run_env(version_table="alembic_version_chat")
