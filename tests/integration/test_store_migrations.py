"""The broker's spent store and the chat store under alembic, on SQLite and a real PostgreSQL.

Each store upgrades to head from an empty database and from a database the old
code created (the spent store's `metadata.create_all`, the chat store's raw
SQLite DDL) with rows in it: the rows survive, and the schema at head is the one
the store's queries describe. Replicas that start together and race to migrate
all succeed, and the history runs once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, insert, inspect, select, text

from atb.dev.postgres import TempPostgres
from atb_runtime.migrate import MIGRATIONS
from broker.adapters import spent
from broker.adapters.spent import Spend, SpendVerdict, SpentStore
from chat.adapters import store as chat
from chat.adapters.store import ChatStore, PostedMessage

SPENT_VERSIONS = "alembic_version_spent"
CHAT_VERSIONS = "alembic_version_chat"

# The chat store's schema as its raw sqlite3 DDL created it before alembic managed it.
LEGACY_CHAT_DDL = """
CREATE TABLE IF NOT EXISTS messages (
    request_id TEXT NOT NULL, channel TEXT NOT NULL, ts TEXT NOT NULL, card_hash TEXT NOT NULL,
    PRIMARY KEY (request_id, channel));
CREATE TABLE IF NOT EXISTS interactions (trigger_id TEXT PRIMARY KEY, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    request_id TEXT NOT NULL, principal TEXT NOT NULL, choice TEXT NOT NULL, vote_id TEXT NOT NULL,
    PRIMARY KEY (request_id, principal));
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: TempPostgres = request.getfixturevalue("postgres_server")
    name = f"store_{secrets.token_hex(4)}"
    server.create_database(name)
    return server.url("owner", name)


def _head(store: str) -> str:
    head = ScriptDirectory(str(MIGRATIONS / store)).get_current_head()
    assert head is not None
    return head


def _versions(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [str(v) for v in conn.execute(text(f"SELECT version_num FROM {table}")).scalars()]  # noqa: S608
    finally:
        engine.dispose()


def _schema_drift(url: str, metadata: MetaData, version_table: str) -> list[Any]:
    """What alembic's autogenerate would change to make the database match the store's tables."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": version_table})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- the spent store -------------------------------------------------------------------------------------------


def test_an_empty_spent_store_is_migrated_to_head(url: str) -> None:
    store = SpentStore(url)
    live = int(time.time()) + 60
    assert asyncio.run(store.spend_many([Spend("jti-new-000000000001", "p", "req-1", "a", live)])) == [
        SpendVerdict.OWNED
    ]
    store.close()
    assert _versions(url, SPENT_VERSIONS) == [_head("spent")]
    assert _schema_drift(url, spent.metadata, SPENT_VERSIONS) == []
    assert "alembic_version" not in _tables(url)  # the audit chain's table: not this history's


def _old_spent_rows(url: str, *, with_requests: bool) -> None:
    """What the broker stored before alembic: its tables made by create_all, and rows in them."""
    engine = create_engine(url)
    tables = [spent.spent_poas, spent.broker_outbox] + ([spent.spent_requests] if with_requests else [])
    spent.metadata.create_all(engine, tables=tables)
    live = int(time.time()) + 600
    with engine.begin() as conn:
        conn.execute(
            insert(spent.spent_poas),
            [
                {
                    "jti": f"jti-old-{i:012d}",
                    "presentation": f"kafka:t:0:{i}",
                    "request_id": f"req-old-{i}",
                    "agent_id": "spiffe://atb.local/agent/a",
                    "spent_at_ms": 1,
                    "expires_at": live,
                }
                for i in range(5)
            ],
        )
        if with_requests:
            conn.execute(
                insert(spent.spent_requests),
                [{"request_id": f"req-old-{i}", "jti": f"jti-old-{i:012d}", "expires_at": live} for i in range(5)],
            )
        conn.execute(insert(spent.broker_outbox).values(instance="0", created_ms=1, records=b"old-batch"))
    engine.dispose()


@pytest.mark.parametrize("with_requests", [True, False], ids=["create_all", "create_all-before-spent-requests"])
def test_a_spent_store_made_by_create_all_is_adopted_with_its_rows(url: str, with_requests: bool) -> None:
    _old_spent_rows(url, with_requests=with_requests)
    assert SPENT_VERSIONS not in _tables(url)
    store = SpentStore(url)  # the broker starting on the new code: migrates
    assert _versions(url, SPENT_VERSIONS) == [_head("spent")]
    assert _schema_drift(url, spent.metadata, SPENT_VERSIONS) == []
    # The rows survived, and the store still knows who spent what.
    assert store.owner("jti-old-000000000003") == "kafka:t:0:3"
    assert store.request_owner("req-old-3") == ("jti-old-000000000003" if with_requests else None)
    live = int(time.time()) + 60
    again = [Spend("jti-old-000000000003", "http:someone-else", "req-old-3", "a", live)]
    assert asyncio.run(store.spend_many(again)) == [SpendVerdict.REPLAYED]
    rows = asyncio.run(store.unpublished("0"))
    assert [row.records for row in rows] == [b"old-batch"]
    store.close()
    SpentStore(url).close()  # and a restart at head changes nothing
    assert _versions(url, SPENT_VERSIONS) == [_head("spent")]


def test_a_table_the_history_does_not_know_is_refused_not_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    with sqlite3.connect(tmp_path / "odd.db") as db:
        db.execute("CREATE TABLE broker_spent_poas (jti TEXT PRIMARY KEY, something_else TEXT)")
    with pytest.raises(RuntimeError, match="cannot adopt broker_spent_poas"):
        spent.migrate(url)
    assert SPENT_VERSIONS not in _tables(url)  # nothing half done


def _migrate_at(kind: str, url: str, ready: Any, out: Any) -> None:
    ready.wait(60)  # everyone at the same moment: once every replica's process is up
    try:
        (spent.migrate if kind == "spent" else chat.migrate)(url)
        out.put("ok")
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("kind", ["spent", "chat"])
def test_replicas_racing_to_migrate_all_succeed_and_migrate_once(url: str, kind: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(5)
    procs = [ctx.Process(target=_migrate_at, args=(kind, url, ready, out)) for _ in range(5)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * 5
    table = SPENT_VERSIONS if kind == "spent" else CHAT_VERSIONS
    assert _versions(url, table) == [_head(kind)]


# --- the chat store --------------------------------------------------------------------------------------------


def test_an_empty_chat_store_is_migrated_to_head_and_keeps_its_rules(url: str) -> None:
    store = ChatStore(url)
    assert _versions(url, CHAT_VERSIONS) == [_head("chat")]
    assert _schema_drift(url, chat.metadata, CHAT_VERSIONS) == []
    assert store.first_interaction("1.2.abc", time.time())
    assert not store.first_interaction("1.2.abc", time.time())  # a replayed trigger id counts once
    assert store.claim_vote("req-1", "alice", "approve", "v1")
    assert not store.claim_vote("req-1", "alice", "deny", "v2")
    assert store.has_voted("req-1", "alice")
    store.release_vote("req-1", "alice")
    assert not store.has_voted("req-1", "alice")
    assert store.claim_vote("req-1", "alice", "approve", "v3")
    assert not store.has_messages("req-1")
    store.save_message("req-1", PostedMessage("C2", "2.0", "h1"))
    store.save_message("req-1", PostedMessage("C1", "1.0", "h1"))
    store.save_message("req-1", PostedMessage("C2", "2.5", "h2"))  # the card was rewritten
    assert store.has_messages("req-1")
    assert store.messages("req-1") == [PostedMessage("C1", "1.0", "h1"), PostedMessage("C2", "2.5", "h2")]
    store.close()
    reopened = ChatStore(url)  # a restart keeps everything
    assert not reopened.first_interaction("1.2.abc", time.time())
    assert reopened.messages("req-1")[1] == PostedMessage("C2", "2.5", "h2")
    reopened.close()


def test_a_chat_store_made_by_the_raw_ddl_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "chat" / "chat.db"
    path.parent.mkdir()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(LEGACY_CHAT_DDL)
    db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)", ("req-old", "C1", "1.0", "hash-old"))
    db.execute("INSERT INTO interactions VALUES (?, ?)", ("9.9.old", 1_767_268_800.25))
    db.execute("INSERT INTO votes VALUES (?, ?, ?, ?)", ("req-old", "alice", "approve", "v-old"))
    db.close()

    store = ChatStore(path)  # the chat service starting on the new code: migrates
    url = f"sqlite:///{path}"
    assert _versions(url, CHAT_VERSIONS) == [_head("chat")]
    assert _schema_drift(url, chat.metadata, CHAT_VERSIONS) == []
    assert store.messages("req-old") == [PostedMessage("C1", "1.0", "hash-old")]
    assert not store.first_interaction("9.9.old", time.time())
    assert store.has_voted("req-old", "alice")
    assert not store.claim_vote("req-old", "alice", "deny", "v-new")
    assert store.claim_vote("req-old", "bob", "approve", "v-bob")
    engine = create_engine(url)
    with engine.connect() as conn:
        received = conn.execute(select(chat.interactions.c.received_at)).scalar_one()
    engine.dispose()
    assert received == 1_767_268_800.25
    store.close()
