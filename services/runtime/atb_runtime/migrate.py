"""Alembic for the services' own stores (the broker's spent store, the chat store), on SQLite and PostgreSQL.

Each store has its own history under `migrations/<store>/` (env.py, versions/)
and its own version table (`alembic_version_<store>`), apart from the audit
store's chain in `migrations/`: the stores live in different databases, and
should two of them ever share one, their histories still do not mix.

A service brings its store to head when it starts (`upgrade`). Several replicas
may start at once, so the whole upgrade runs in one transaction that holds the
store's migration lock from its first statement: a PostgreSQL transaction
advisory lock, or SQLite's write lock (`BEGIN IMMEDIATE`; the others wait up to
the busy timeout). The replica that comes second finds the store at head and
does nothing. DDL runs inside that transaction on both databases, so a failed
upgrade leaves nothing half done.

Each store's first revision creates the schema the store had before alembic
managed it (SQLAlchemy's `create_all`, raw DDL), table by table and only where
missing, so a database created that way is adopted as it is, rows included.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection

__all__ = ["BUSY_TIMEOUT_S", "MIGRATIONS", "run_env", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"
"""The checkout's `migrations/`; an installed image passes its own copy of a store's folder."""

BUSY_TIMEOUT_S = 60
"""How long a replica waits on SQLite for another one's migration (or write) to finish."""


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url)
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would run DDL outside any transaction:
        # SQLAlchemy's "begin" below issues BEGIN IMMEDIATE instead (the pysqlite recipe).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        _wal(cursor)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _wal(cursor: Any) -> None:
    """Switch to WAL, waiting while another replica holds the database.

    Changing the journal mode needs the database to itself, and SQLite answers "database
    is locked" at once instead of waiting out the busy timeout (seen when five replicas
    migrate a new file together).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def upgrade(url: str, location: Path, *, lock: int, revision: str = "head") -> None:
    """Bring the store at `url` to `revision` with the history in `location`, holding the store's lock.

    `lock` is the PostgreSQL advisory lock key of this store's migrations (one per store).
    """
    if not (location / "env.py").exists():
        raise FileNotFoundError(f"no alembic migrations at {location}: set the store's ATB_*_MIGRATIONS_DIR")
    config = Config()
    config.set_main_option("script_location", str(location))
    config.attributes["configure_logger"] = False
    engine = _engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def run_env(version_table: str) -> None:
    """The body of a store's env.py: run its migrations on the connection `upgrade` holds."""
    conn: Connection | None = context.config.attributes.get("connection")
    if conn is None:
        raise RuntimeError("run a store's migrations with atb_runtime.migrate.upgrade: it holds the migration lock")
    # The transaction is upgrade()'s: alembic runs inside it and does not commit.
    context.configure(
        connection=conn,
        version_table=version_table,
        render_as_batch=conn.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
