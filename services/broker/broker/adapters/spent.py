"""The spent-PoA store: each `jti` is spent exactly once, across replicas and restarts.

It is also the HTTP way in's outbox: the BrokerDecision and audit events of a
batch are written in the same transaction that spends its PoAs, so an agent
hears "allow" only once the decision is durable; a relay (adapters/outbox.py)
publishes them to Kafka right after, and again after a crash.

One row per spent `jti`, written with `INSERT ... ON CONFLICT DO NOTHING` and read
back in the same transaction: the first presentation to commit owns the `jti`;
every other presentation learns who owns it and is denied as a replay. A
redelivered Kafka record is the *same* presentation (its id is the record's
topic/partition/offset), so it finds itself as the owner and gets the same allow
again; nothing else ever does.

Defense in depth (docs/scaling.md): one row per spent *request* too, in the same
transaction. The issuer signs one PoA per request, but should a second one ever
exist (a fencing failure, a replayed quorum), the first PoA of a request to be
spent owns the request and every other PoA of it is refused
(`poa_request_already_spent`): a payment cannot run twice.

SQLite (the embedded default; one file shared by every replica on the host,
`BEGIN IMMEDIATE` so writers queue instead of deadlocking) or PostgreSQL (several
hosts; the primary key arbitrates). SQLite runs `synchronous=FULL` by default:
each commit is fsynced before the agent hears "allow", so a power loss cannot
forget a spend and let the same PoA run again. `synchronous=NORMAL`
(`ATB_SPENT_SQLITE_SYNCHRONOUS`) is faster and still safe against a crash of
the process, but not against a power loss or a kernel panic: the last commits
can vanish (README, "Spent-store durability"; bench/broker_decisions.py
measures both). Rows may be dropped once their PoA has
expired: an expired PoA is refused before it gets here.

The schema is the alembic history in `migrations/spent/` (`migrate`; the store
runs it when it opens, under a lock, so replicas starting together are safe),
never `create_all`: the tables below describe it for queries.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    false,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Executable

from atb_runtime.migrate import MIGRATIONS, upgrade

__all__ = [
    "MIGRATION_LOCK",
    "REQUEST_MEMORY_S",
    "SYNCHRONOUS",
    "OutboxRow",
    "Spend",
    "SpendVerdict",
    "SpentStore",
    "broker_outbox",
    "metadata",
    "migrate",
    "spent_poas",
    "spent_requests",
]

REQUEST_MEMORY_S = 15 * 60
"""How long a spent request is remembered after its PoA expired: longer than any second PoA of
the same request could live (the issuer signs only within 10 minutes of the quorum)."""
STARTUP_PURGE_S = 3600
"""On start, the store forgets PoAs that expired longer ago than this."""

metadata = MetaData()

spent_poas = Table(
    "broker_spent_poas",
    metadata,
    Column("jti", String(128), primary_key=True),
    Column("presentation", String(300), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("agent_id", String(2048), nullable=False),
    Column("spent_at_ms", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

spent_requests = Table(
    "broker_spent_requests",
    metadata,
    Column("request_id", String(255), primary_key=True),
    Column("jti", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)


class SpendVerdict(StrEnum):
    """What the store says about one presentation's spend."""

    OWNED = "owned"
    """This presentation spent the PoA (first, or a redelivery of the same presentation)."""
    REPLAYED = "poa_single_use_replay_blocked"
    """Another presentation spent this `jti` first."""
    REQUEST_SPENT = "poa_request_already_spent"
    """Another PoA of the same request was spent first."""


broker_outbox = Table(
    "broker_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance", String(64), nullable=False, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("records", LargeBinary, nullable=False),
    Column("published", Boolean, nullable=False, server_default=false(), index=True),
)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    records: bytes


@dataclass(frozen=True)
class Spend:
    jti: str
    presentation: str
    request_id: str
    agent_id: str
    expires_at: int


MIGRATION_LOCK = 0x41544253
"""PostgreSQL advisory lock key of the spent store's migrations ("ATBS")."""


def migrate(url: str, migrations: Path | None = None) -> None:
    """Bring the spent store at `url` to the newest schema (alembic upgrade head, under the migration lock).

    `migrations` defaults to the checkout's `migrations/spent/`; an installed image
    passes its own copy (`ATB_SPENT_MIGRATIONS_DIR`).
    """
    upgrade(url, migrations or MIGRATIONS / "spent", lock=MIGRATION_LOCK)


SYNCHRONOUS = ("FULL", "NORMAL")
"""The SQLite durability modes the spent store accepts (FULL: durable before the answer)."""


def _sqlite_engine(url: str, synchronous: str) -> Engine:
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (the pysqlite recipe).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Checkpoints (which fsync) run in the store's thread (`checkpoint()`), never
        # inside a commit on the decision path.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass(frozen=True)
class _Statements:
    """A spend's statements, built once per store: building a SQLAlchemy statement cost more than
    running it (about a millisecond for a batch's five, on every batch); the compiled form is cached
    by the statement, the values are bound at execution."""

    spend_poas: Executable
    poa_owners: Executable
    spend_requests: Executable
    request_spenders: Executable
    add_outbox: Executable

    @classmethod
    def of(cls, sqlite: bool) -> _Statements:
        dialect_insert = sqlite_insert if sqlite else pg_insert
        return cls(
            spend_poas=dialect_insert(spent_poas).on_conflict_do_nothing(index_elements=["jti"]),
            poa_owners=select(spent_poas.c.jti, spent_poas.c.presentation).where(
                spent_poas.c.jti.in_(bindparam("jtis", expanding=True))
            ),
            spend_requests=dialect_insert(spent_requests).on_conflict_do_nothing(index_elements=["request_id"]),
            request_spenders=select(spent_requests.c.request_id, spent_requests.c.jti).where(
                spent_requests.c.request_id.in_(bindparam("ids", expanding=True))
            ),
            add_outbox=insert(broker_outbox),
        )


class SpentStore:
    def __init__(self, url: str, *, synchronous: str = "FULL", migrations: Path | None = None) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
        self._sqlite = url.startswith("sqlite")
        # A commit that fsyncs (FULL) waits for the disk: in the store's thread, not the event loop.
        self._inline = self._sqlite and synchronous == "NORMAL"
        migrate(url, migrations)
        self._engine = _sqlite_engine(url, synchronous) if self._sqlite else create_engine(url, pool_pre_ping=True)
        self._statements = _Statements.of(self._sqlite)
        # One thread: the store is called from the event loop, one batch at a time.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spent-store")

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._engine.dispose()

    async def start(self) -> None:
        """On start, forget the PoAs that expired over an hour ago (and what goes with them)."""
        await self.forget_expired(int(time.time()) - STARTUP_PURGE_S)

    async def stop(self) -> None:
        self.close()

    async def spend_many(self, spends: Sequence[Spend]) -> list[SpendVerdict]:
        """For each spend, OWNED when this presentation owns its `jti` and its request, else why not."""
        return await self.commit(spends)

    async def commit(
        self,
        spends: Sequence[Spend],
        outbox: Callable[[list[SpendVerdict]], bytes] | None = None,
        instance: str = "",
    ) -> list[SpendVerdict]:
        """Spend, and (with `outbox`) store the batch's events built from who owns what, in one transaction."""
        if not spends and outbox is None:
            return []
        if self._inline:
            # A local SQLite commit without fsync (synchronous=NORMAL) takes a fraction of a
            # millisecond: cheaper in the event loop than a thread hop and the GIL hand-over
            # that comes with it. An fsync, or PostgreSQL's round trip, goes to the thread.
            return self._commit(spends, outbox, instance)
        loop = asyncio.get_running_loop()
        # In the caller's context: the outbox's events built in the thread carry its requests' traces.
        run = contextvars.copy_context().run
        return await loop.run_in_executor(self._executor, run, self._commit, spends, outbox, instance)

    def _commit(
        self, spends: Sequence[Spend], outbox: Callable[[list[SpendVerdict]], bytes] | None, instance: str
    ) -> list[SpendVerdict]:
        now_ms = int(time.time() * 1000)
        with self._engine.begin() as conn:
            owned = self._spend(conn, spends, now_ms) if spends else []
            if outbox is not None:
                conn.execute(
                    self._statements.add_outbox, {"instance": instance, "created_ms": now_ms, "records": outbox(owned)}
                )
        return owned

    def _spend(self, conn: Connection, spends: Sequence[Spend], now_ms: int) -> list[SpendVerdict]:
        rows = [
            {
                "jti": s.jti,
                "presentation": s.presentation,
                "request_id": s.request_id,
                "agent_id": s.agent_id,
                "spent_at_ms": now_ms,
                "expires_at": s.expires_at,
            }
            for s in spends
        ]
        statements = self._statements
        conn.execute(statements.spend_poas, rows)
        found = conn.execute(statements.poa_owners, {"jtis": sorted({s.jti for s in spends})})
        owners = {str(row[0]): str(row[1]) for row in found}
        # A request is spent by the first of its PoAs whose own spend succeeded.
        first = [s for s in spends if owners.get(s.jti) == s.presentation]
        if first:
            requests = [{"request_id": s.request_id, "jti": s.jti, "expires_at": s.expires_at} for s in first]
            conn.execute(statements.spend_requests, requests)
        found = conn.execute(statements.request_spenders, {"ids": sorted({s.request_id for s in spends})})
        spent_by = {str(row[0]): str(row[1]) for row in found}
        return [_verdict(s, owners, spent_by) for s in spends]

    def request_owner(self, request_id: str) -> str | None:
        """The `jti` that spent this request, if any."""
        with self._engine.connect() as conn:
            found = conn.execute(select(spent_requests.c.jti).where(spent_requests.c.request_id == request_id)).scalar()
        return None if found is None else str(found)

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file (SQLite; off the event loop). A no-op on PostgreSQL."""
        if self._sqlite:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._checkpoint)

    def _checkpoint(self) -> None:
        # Outside any transaction: through SQLAlchemy the statement would run after the
        # "begin" hook's BEGIN IMMEDIATE, and SQLite refuses a checkpoint there ("database
        # table is locked"). The DBAPI connection is in autocommit (`_on_connect`).
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.close()
        finally:
            raw.close()

    async def unpublished(self, instance: str, limit: int = 200) -> list[OutboxRow]:
        """This instance's outbox rows not yet on Kafka, oldest first."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._unpublished, instance, limit)

    def _unpublished(self, instance: str, limit: int) -> list[OutboxRow]:
        query = (
            select(broker_outbox.c.id, broker_outbox.c.records)
            .where(broker_outbox.c.instance == instance, broker_outbox.c.published == false())
            .order_by(broker_outbox.c.id)
            .limit(limit)
        )
        with self._engine.begin() as conn:
            return [OutboxRow(int(row[0]), bytes(row[1])) for row in conn.execute(query)]

    async def mark_published(self, ids: Sequence[int]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._mark_published, list(ids))

    def _mark_published(self, ids: list[int]) -> None:
        if ids:
            with self._engine.begin() as conn:
                conn.execute(update(broker_outbox).where(broker_outbox.c.id.in_(ids)).values(published=True))

    def owner(self, jti: str) -> str | None:
        with self._engine.connect() as conn:
            found = conn.execute(select(spent_poas.c.presentation).where(spent_poas.c.jti == jti)).scalar()
        return None if found is None else str(found)

    async def forget_expired(self, before_epoch_s: int) -> int:
        """Drop rows of PoAs that expired before `before_epoch_s` (they can never verify again)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._forget_expired, before_epoch_s)

    def _forget_expired(self, before: int) -> int:
        with self._engine.begin() as conn:
            gone = conn.execute(delete(spent_poas).where(spent_poas.c.expires_at < before)).rowcount or 0
            conn.execute(delete(spent_requests).where(spent_requests.c.expires_at < before - REQUEST_MEMORY_S))
            published_before_ms = before * 1000
            conn.execute(
                delete(broker_outbox).where(
                    broker_outbox.c.published == true(), broker_outbox.c.created_ms < published_before_ms
                )
            )
            return int(gone)


def _verdict(spend: Spend, jti_owners: dict[str, str], request_spent_by: dict[str, str]) -> SpendVerdict:
    if jti_owners.get(spend.jti) != spend.presentation:
        return SpendVerdict.REPLAYED
    if request_spent_by.get(spend.request_id) != spend.jti:
        return SpendVerdict.REQUEST_SPENT
    return SpendVerdict.OWNED
