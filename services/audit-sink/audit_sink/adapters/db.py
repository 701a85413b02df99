"""The audit store on SQLAlchemy Core (SQLite by default, PostgreSQL in production).

Rows and the consumer offsets that produced them are written in one database
transaction, so a crash anywhere either keeps both or neither: every record is
stored exactly once (DESIGN.md §6.4). The unique (topic, partition, offset) key
makes a replay of an already stored record a no-op rather than a duplicate.
The schema is created by the alembic migrations in `migrations/`, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    false,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from audit_sink.domain import AuditRow

__all__ = ["AuditStore", "StoredEvent", "audit_events", "consumer_offsets", "make_engine", "metadata", "migrate"]

metadata = MetaData()

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("request_id", String(255)),
    Column("producer", String(2048)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("retain_until", DateTime(timezone=True), nullable=False),
    Column("record_key", LargeBinary),
    Column("raw", LargeBinary, nullable=False),
    Column("decode_error", Text),
    Column("redacted", Boolean, nullable=False, server_default=false()),
    Column("received_sha256", String(71)),
)

consumer_offsets = Table(
    "audit_consumer_offsets",
    metadata,
    Column("group_id", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    topic: str
    event_type: str
    producer: str | None
    occurred_at: datetime
    recorded_at: datetime
    raw: bytes


_MIGRATIONS = Path(__file__).resolve().parents[4] / "migrations"


def migrate(url: str, migrations: Path | None = None) -> None:
    """Bring the database at `url` to the newest schema (alembic upgrade head).

    `migrations` defaults to the checkout's `migrations/`; an installed image
    passes its own copy (`ATB_AUDIT_MIGRATIONS_DIR`).
    """
    location = migrations or _MIGRATIONS
    if not (location / "env.py").exists():
        raise FileNotFoundError(f"no alembic migrations at {location}: set ATB_AUDIT_MIGRATIONS_DIR")
    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class AuditStore:
    def __init__(self, engine: Engine, group_id: str) -> None:
        self._engine = engine
        self._group = group_id
        insert = sqlite_insert if engine.dialect.name == "sqlite" else pg_insert
        self._insert_rows = insert(audit_events).on_conflict_do_nothing(index_elements=["topic", "partition", "offset"])
        upsert = insert(consumer_offsets)
        self._upsert_offset = upsert.on_conflict_do_update(
            index_elements=["group_id", "topic", "partition"],
            set_={"next_offset": upsert.excluded.next_offset},
        )

    def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read, per (topic, partition), as last committed with the rows."""
        query = select(consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.next_offset).where(
            consumer_offsets.c.group_id == self._group
        )
        with self._engine.connect() as conn:
            return {(row.topic, row.partition): row.next_offset for row in conn.execute(query)}

    def append(self, rows: Sequence[AuditRow], next_offsets: dict[tuple[str, int], int]) -> None:
        """Store rows and advance offsets in one transaction."""
        with self._engine.begin() as conn:
            if rows:
                conn.execute(self._insert_rows, [_values(row) for row in rows])
            conn.execute(
                self._upsert_offset,
                [
                    {"group_id": self._group, "topic": topic, "partition": partition, "next_offset": offset}
                    for (topic, partition), offset in next_offsets.items()
                ],
            )

    def for_request(self, request_id: str) -> list[StoredEvent]:
        """Every stored event of one request, in insertion order."""
        query = (
            select(
                audit_events.c.seq,
                audit_events.c.topic,
                audit_events.c.event_type,
                audit_events.c.producer,
                audit_events.c.occurred_at,
                audit_events.c.recorded_at,
                audit_events.c.raw,
            )
            .where(audit_events.c.request_id == request_id)
            .order_by(audit_events.c.seq)
        )
        with self._engine.connect() as conn:
            return [StoredEvent(*row) for row in conn.execute(query)]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())


def _values(row: AuditRow) -> dict[str, object]:
    return {
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "request_id": row.request_id,
        "producer": row.producer,
        "occurred_at": row.occurred_at,
        "recorded_at": row.recorded_at,
        "retain_until": row.retain_until,
        "record_key": row.record_key,
        "raw": row.raw,
        "decode_error": row.decode_error,
        "redacted": row.redacted,
        "received_sha256": row.received_sha256,
    }
