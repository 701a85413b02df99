"""The audit store on SQLAlchemy Core (SQLite by default, PostgreSQL in production).

Rows and the consumer offsets that produced them are written in one database
transaction, so a crash anywhere either keeps both or neither: every record is
stored exactly once (docs/architecture.md §6.4). The unique (topic, partition, offset) key
makes a replay of an already stored record a no-op rather than a duplicate.
The schema is created by the alembic migrations in `migrations/`, never here.

Each new row carries its Merkle leaf (`leaf_idx`, `leaf_hash`: index in insertion
order and hash), assigned under a writer lock (PostgreSQL advisory lock, SQLite
`BEGIN IMMEDIATE`), so leaf order is commit order even with several writers.
`audit_leaves` holds the leaves of rows stored before revision 0004 and of rows
a purge removed; the view `audit_tree` is all leaves. A record whose position is
below the highest stored offset of its partition (any consumer group) is
already stored and is skipped, not duplicated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    false,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.selectable import ScalarSelect, Select

from audit_sink.domain import AuditRow
from audit_sink.domain.facets import facets_of
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import leaf_hash
from audit_sink.domain.times import as_utc

__all__ = [
    "AppendResult",
    "AuditStore",
    "Seal",
    "SealedCheckpoint",
    "StoredCosignature",
    "StoredEvent",
    "audit_archive_seals",
    "audit_checkpoints",
    "audit_cosignatures",
    "audit_event_facets",
    "audit_events",
    "audit_leaves",
    "audit_siem",
    "audit_tree",
    "consumer_offsets",
    "make_engine",
    "metadata",
    "migrate",
]

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
    Column("received_len", BigInteger),  # migration 0005: `raw` is a prefix of a record this long
    Column("audit_type", String(64)),  # migration 0006: an AuditEvent's audit name, read from `raw`
    Column("leaf_idx", BigInteger),
    Column("leaf_hash", LargeBinary(32)),
)

consumer_offsets = Table(
    "audit_consumer_offsets",
    metadata,
    Column("group_id", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)


audit_leaves = Table(
    "audit_leaves",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
)

audit_tree = Table(
    "audit_tree",  # a view (migration 0004): audit_leaves UNION ALL the leaves of audit_events
    MetaData(),  # not `metadata`: nothing may ever create it as a table
    Column("idx", BigInteger),
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("leaf_hash", LargeBinary(32)),
)

audit_siem = Table(
    "audit_siem",  # a view (migration 0006): the rows as a SIEM reads them, `event_type` = the audit name
    MetaData(),
    Column("seq", BigInteger),
    Column("leaf_idx", BigInteger),
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("event_id", String(255)),
    Column("event_type", String(128)),
    Column("ce_type", String(128)),
    Column("audit_type", String(64)),
    Column("request_id", String(255)),
    Column("producer", String(2048)),
    Column("occurred_at", DateTime(timezone=True)),
    Column("recorded_at", DateTime(timezone=True)),
    Column("retain_until", DateTime(timezone=True)),
    Column("redacted", Boolean),
    Column("received_sha256", String(71)),
    Column("raw", LargeBinary),
)

audit_event_facets = Table(
    "audit_event_facets",  # migration 0010: an event's search facets (domain/facets.py), keyed by its seq
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("agent_id", String(255)),
    Column("action", String(128)),
    Column("tier", String(16)),
    Column("outcome", String(32)),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_cosignatures = Table(
    "audit_cosignatures",  # migration 0007: a witness's cosignature per checkpoint, append-only
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("witness", String(255), nullable=False),
    Column("key_id", String(8), nullable=False),
    Column("cosigned_at", BigInteger, nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_archive_seals = Table(
    "audit_archive_seals",  # migration 0008: each verification of the archive by the hot purge, append-only
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("location", String(1024), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("tree_end", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("verified_at", DateTime(timezone=True), nullable=False),
)

audit_legal_holds = Table(
    "audit_legal_holds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(255)),
    Column("range_from", DateTime(timezone=True)),
    Column("range_until", DateTime(timezone=True)),
    Column("reason", Text, nullable=False),
    Column("placed_by", String(255), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
)

audit_legal_hold_releases = Table(
    "audit_legal_hold_releases",
    metadata,
    Column("hold_id", Integer, primary_key=True, autoincrement=False),
    Column("reason", Text, nullable=False),
    Column("released_by", String(255), nullable=False),
    Column("released_at", DateTime(timezone=True), nullable=False),
)

audit_purges = Table(
    "audit_purges",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("purged_at", DateTime(timezone=True), nullable=False),
    Column("purged_by", String(255), nullable=False),
    Column("removed", BigInteger, nullable=False),
    Column("note", Text, nullable=False),
)

audit_tombstones = Table(
    "audit_tombstones",
    metadata,
    Column("leaf_idx", BigInteger, primary_key=True, autoincrement=False),
    Column("purge_id", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("leaf", LargeBinary, nullable=False),
)

_PROBES = 400  # partitions per statement: three probes each
_WRITER_LOCK = 0x41544241  # "ATBA": the pg_advisory_xact_lock key of the audit writer


@dataclass(frozen=True)
class SealedCheckpoint:
    """A signed checkpoint note, stored in the same transaction as the leaves it covers."""

    size: int
    root: bytes
    note: str
    created_at: datetime


Seal = Callable[[int, tuple[bytes, ...], tuple[AuditRow, ...]], SealedCheckpoint | None]
"""Asked inside an append's transaction, with the tree size before it and the new leaves and rows:
the checkpoint to store with them, or None. Must not change anything: the transaction may still fail."""


@dataclass(frozen=True)
class AppendResult:
    """The leaves one append added: `first_index` is the tree size before it."""

    first_index: int
    hashes: tuple[bytes, ...]
    rows: tuple[AuditRow, ...]
    checkpoint: SealedCheckpoint | None = None
    """The checkpoint stored with them, if `seal` gave one."""


@dataclass(frozen=True)
class StoredCosignature:
    """A checkpoint a witness cosigned: `note` carries the log's signature and the witness's cosignature."""

    size: int
    root: bytes
    witness: str
    key_id: str
    """Hex."""
    cosigned_at: int
    """The cosignature's timestamp (POSIX seconds)."""
    note: str
    created_at: datetime


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
        upsert = insert(consumer_offsets)
        self._upsert_offset = upsert.on_conflict_do_update(
            index_elements=["group_id", "topic", "partition"],
            set_={"next_offset": func.max(consumer_offsets.c.next_offset, upsert.excluded.next_offset)}
            if engine.dialect.name == "sqlite"
            else {"next_offset": func.greatest(consumer_offsets.c.next_offset, upsert.excluded.next_offset)},
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read, per (topic, partition), as last committed with the rows."""
        query = select(consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.next_offset).where(
            consumer_offsets.c.group_id == self._group
        )
        with self._engine.connect() as conn:
            return {(row.topic, row.partition): row.next_offset for row in conn.execute(query)}

    def append(
        self, rows: Sequence[AuditRow], next_offsets: dict[tuple[str, int], int], seal: Seal | None = None
    ) -> AppendResult:
        """Store the new rows, their leaves and the offsets in one transaction; skip rows already stored.

        `seal` may add a signed checkpoint of the tree they make to the same transaction: one
        commit (one fsync) instead of two, and no checkpoint ever covers leaves that were not stored.
        """
        checkpoint = None
        with self._engine.begin() as conn:
            _lock(conn)
            first, stored = _tip_and_stored(conn, {(row.topic, row.partition) for row in rows})
            fresh = tuple(row for row in rows if row.offset >= stored.get((row.topic, row.partition), 0))
            hashes = tuple(leaf_hash(leaf_bytes(row)) for row in fresh)
            if fresh:
                values = [_values(row) for row in fresh]
                for index, (value, digest) in enumerate(zip(values, hashes, strict=True), start=first):
                    value["leaf_idx"], value["leaf_hash"] = index, digest
                _insert(conn, fresh, values, first)
                checkpoint = seal(first, hashes, fresh) if seal is not None else None
                if checkpoint is not None:
                    conn.execute(audit_checkpoints.insert(), _checkpoint_values(checkpoint))
            if next_offsets:
                conn.execute(
                    self._upsert_offset,
                    [
                        {"group_id": self._group, "topic": topic, "partition": partition, "next_offset": offset}
                        for (topic, partition), offset in next_offsets.items()
                    ],
                )
        return AppendResult(first, hashes, fresh, checkpoint)

    def leaf_hashes(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Leaf hashes in tree order, `start` ≤ index < `stop`."""
        query = select(audit_tree.c.leaf_hash).where(audit_tree.c.idx >= start).order_by(audit_tree.c.idx)
        if stop is not None:
            query = query.where(audit_tree.c.idx < stop)
        with self._engine.connect() as conn:
            return [bytes(h) for (h,) in conn.execute(query)]

    def add_checkpoint(self, size: int, root: bytes, note: str, created_at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(audit_checkpoints.insert(), _checkpoint_values(SealedCheckpoint(size, root, note, created_at)))

    def latest_checkpoint_at(self) -> datetime | None:
        """When the newest stored checkpoint was signed (None: none yet)."""
        with self._engine.connect() as conn:
            latest = conn.execute(select(func.max(audit_checkpoints.c.created_at))).scalar()
        if not isinstance(latest, datetime):
            return None
        return latest if latest.tzinfo is not None else latest.replace(tzinfo=UTC)  # SQLite keeps no zone

    def checkpoint_notes(self) -> list[str]:
        """Every stored checkpoint note, oldest first."""
        with self._engine.connect() as conn:
            query = select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.id)
            return [note for (note,) in conn.execute(query)]

    def add_cosignature(self, cosigned: StoredCosignature) -> None:
        """Store a witness's cosignature (a replay of a stored one is a no-op)."""
        with self._engine.begin() as conn:
            key = (
                audit_cosignatures.c.tree_size == cosigned.size,
                audit_cosignatures.c.root_hash == cosigned.root,
                audit_cosignatures.c.key_id == cosigned.key_id,
            )
            if conn.execute(select(audit_cosignatures.c.id).where(*key)).first() is not None:
                return
            conn.execute(
                audit_cosignatures.insert(),
                {
                    "tree_size": cosigned.size,
                    "root_hash": cosigned.root,
                    "witness": cosigned.witness,
                    "key_id": cosigned.key_id,
                    "cosigned_at": cosigned.cosigned_at,
                    "note": cosigned.note,
                    "created_at": as_utc(cosigned.created_at),
                },
            )

    def cosigned_sizes(self) -> dict[str, int]:
        """Per witness key id (hex), the largest tree size it cosigned."""
        query = select(audit_cosignatures.c.key_id, func.max(audit_cosignatures.c.tree_size)).group_by(
            audit_cosignatures.c.key_id
        )
        with self._engine.connect() as conn:
            return {str(k): int(size) for k, size in conn.execute(query)}

    def cosigned_notes(self) -> list[str]:
        """Every stored cosigned checkpoint note, oldest first."""
        with self._engine.connect() as conn:
            query = select(audit_cosignatures.c.note).order_by(audit_cosignatures.c.id)
            return [note for (note,) in conn.execute(query)]

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


def _lock(conn: Connection) -> None:
    """The writer lock, held to the end of the transaction."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITER_LOCK})


def _max(column: Column[int], *where: ColumnElement[bool]) -> ScalarSelect[int]:
    return select(func.max(column)).where(*where).scalar_subquery()


def _top(column: Column[int], *where: ColumnElement[bool]) -> ScalarSelect[int]:
    """The largest value by walking an index backwards, one entry.

    Not max(): with stale statistics (a young table) PostgreSQL answers `max(offset) WHERE
    topic = .. AND partition = ..` by reading every index entry of the partition, which made
    each append cost more the more it had stored.
    """
    return select(column).where(column.is_not(None), *where).order_by(column.desc()).limit(1).scalar_subquery()


def _tip_and_stored(conn: Connection, partitions: set[tuple[str, int]]) -> tuple[int, dict[tuple[str, int], int]]:
    """Under the writer lock: the tree size (the next leaf's index) and, per partition, the offset
    below which every record is stored already.

    That offset is the highest next offset any consumer group committed, or one past the
    highest stored row or kept leaf, whichever is larger: so a replay is skipped even if
    the offsets table were lost. All of it in one statement of index probes (one per
    _PROBES partitions: PostgreSQL takes at most 1,664 select columns); a round trip per
    probe cost more than the probe. Never a max over the `audit_tree` view, which SQLite
    would compute by scanning it.
    """
    ordered = sorted(partitions)
    first, stored = 0, {}
    for start in range(0, max(len(ordered), 1), _PROBES):
        chunk = ordered[start : start + _PROBES]
        params: dict[str, object] = {}
        for number, (topic, partition) in enumerate(chunk):
            params[f"t_{number}"], params[f"p_{number}"] = topic, partition
        values = list(conn.execute(_probe(len(chunk), with_tip=start == 0), params).one())
        if start == 0:
            tops = [int(top) + 1 for top in values[:2] if top is not None]
            first, values = max(tops, default=0), values[2:]
        for number, key in enumerate(chunk):
            row_top, leaf_top, committed = values[3 * number : 3 * number + 3]
            known = [int(top) + 1 for top in (row_top, leaf_top) if top is not None]
            known += [int(committed)] if committed is not None else []
            if known:
                stored[key] = max(known)
    return first, stored


@functools.cache
def _probe(partitions: int, *, with_tip: bool) -> Select[*tuple[Any, ...]]:
    """The probe statement of `_tip_and_stored` for `partitions` partitions, topic and partition
    number `n` bound as `t_n` and `p_n`.

    Built once per shape: building the expression cost more than running it (about a
    millisecond for three partitions, per append), and the compiled form is cached by it.
    """
    tip = [_top(audit_events.c.leaf_idx), _top(audit_leaves.c.idx)] if with_tip else []
    probes: list[ScalarSelect[int]] = []
    for number in range(partitions):
        topic, partition = bindparam(f"t_{number}", type_=String), bindparam(f"p_{number}", type_=Integer)
        probes += [
            _top(audit_events.c.offset, audit_events.c.topic == topic, audit_events.c.partition == partition),
            _top(audit_leaves.c.offset, audit_leaves.c.topic == topic, audit_leaves.c.partition == partition),
            _max(
                consumer_offsets.c.next_offset,
                consumer_offsets.c.topic == topic,
                consumer_offsets.c.partition == partition,
            ),
        ]
    return select(*(tip + probes))


def _insert(conn: Connection, rows: Sequence[AuditRow], values: list[dict[str, object]], first: int) -> None:
    """The rows (leaf indexes from `first` on), then the facets of those that have any, keyed by
    the `seq` each row got.

    The seqs are read back by the rows' leaf indexes (unique, indexed, just assigned under the
    writer lock). Not INSERT .. RETURNING: on SQLite that inserts row by row, twice the cost,
    and on PostgreSQL (insertmanyvalues) it took three times as long; nor INSERT .. SELECT of
    each row's facets, slower on SQLite."""
    conn.execute(audit_events.insert(), values)
    facets = {
        leaf: found
        for leaf, row in enumerate(rows, start=first)
        if row.decode_error is None
        and (found := row.facets if row.facets is not None else facets_of(row.event_type, row.raw))
    }
    if not facets:
        return
    kept = []
    for leaf, seq in conn.execute(_SEQS, {"low": min(facets), "high": max(facets)}):
        if (of_leaf := facets.get(leaf)) is not None:
            agent_id, action, tier, outcome = of_leaf
            kept.append({"seq": seq, "agent_id": agent_id, "action": action, "tier": tier, "outcome": outcome})
    conn.execute(audit_event_facets.insert(), kept)


_SEQS = select(audit_events.c.leaf_idx, audit_events.c.seq).where(
    audit_events.c.leaf_idx >= bindparam("low", type_=BigInteger),
    audit_events.c.leaf_idx <= bindparam("high", type_=BigInteger),
)
"""The `seq` each row got, by leaf index: built once (the compiled form is cached by it)."""


def _checkpoint_values(cp: SealedCheckpoint) -> dict[str, object]:
    return {"tree_size": cp.size, "root_hash": cp.root, "note": cp.note, "created_at": as_utc(cp.created_at)}


def _values(row: AuditRow) -> dict[str, object]:
    return {
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "request_id": row.request_id,
        "producer": row.producer,
        "occurred_at": as_utc(row.occurred_at),
        "recorded_at": as_utc(row.recorded_at),
        "retain_until": as_utc(row.retain_until),
        "record_key": row.record_key,
        "raw": row.raw,
        "decode_error": row.decode_error,
        "redacted": row.redacted,
        "received_sha256": row.received_sha256,
        "received_len": row.received_len,
        "audit_type": row.audit_type,
    }
