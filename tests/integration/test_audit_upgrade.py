"""Upgrading an audit store written before the Merkle revision (0002 → head) on SQLite and PostgreSQL.

Rows stored by earlier versions get their leaves in insertion order, hashed
exactly as the sink hashes new rows; on SQLite the stored timestamps (text)
must come back as datetimes for that (a bug this test caught).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, insert, select, text

from atb.dev.postgres import TempPostgres
from atb_runtime import outgoing
from audit_sink.adapters.db import audit_events, audit_leaves, make_engine
from audit_sink.adapters.ledger import iter_rows, purge
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import leaf_hash
from audit_sink.domain.retention import RetentionPolicy
from audit_sink.domain.rows import AuditRow, RecordMeta, row_for
from audit_sink.evidence import verify_store
from contracts import AuditEvent
from tests.audit_support import Filler, rows

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
OLD = datetime(2015, 3, 1, tzinfo=UTC)  # + 7 years: past retention


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


def _at_0002(row: AuditRow) -> dict[str, object]:
    """A row's columns as revision 0002 has them (`received_len` came with 0005, `audit_type` with 0006)."""
    values = row._asdict()
    assert values.pop("received_len") is None
    values.pop("audit_type")
    values.pop("facets")  # not a column
    return values


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    server: TempPostgres = request.getfixturevalue("postgres_server")
    name = f"upgrade_{secrets.token_hex(4)}"
    server.create_database(name)
    return server.url("owner", name)


def test_rows_of_an_older_store_get_their_leaves_on_upgrade(url: str) -> None:
    command.upgrade(_config(url), "0002")
    rows = []
    for i in range(25):
        event = AuditEvent(
            audit_type="old_event",
            actor="spiffe://atb.local/svc/x",
            outcome="info",
            request_id=f"req-{i}",
            occurred_at=datetime(2026, 1, 1, 12, 0, i, 123456, tzinfo=UTC),
        )
        record = outgoing(event, source="spiffe://atb.local/svc/x", namespace="")
        meta = RecordMeta("atb.audit", i % 3, i, record.key, record.value, 1_767_268_800_000 + i)
        rows.append(row_for(meta, recorded_at=datetime(2026, 1, 1, 12, 1, tzinfo=UTC), retention=RetentionPolicy()))
    engine = create_engine(url)
    with engine.begin() as conn:
        for row in rows:
            conn.execute(insert(audit_events).values(**_at_0002(row)))
    command.upgrade(_config(url), "head")
    with engine.connect() as conn:
        stored = conn.execute(select(audit_leaves.c.idx, audit_leaves.c.leaf_hash).order_by(audit_leaves.c.idx)).all()
    expected = [leaf_hash(leaf_bytes(row)) for _, row in iter_rows(engine)]
    engine.dispose()
    assert [idx for idx, _ in stored] == list(range(25))
    assert [bytes(h) for _, h in stored] == expected


def test_a_store_upgraded_to_leaves_in_rows_keeps_one_tree_through_new_rows_and_purges(
    url: str, tmp_path: Path
) -> None:
    """Leaves of rows from before revision 0004 stay in audit_leaves; new rows carry theirs; a purge of
    both kinds keeps every leaf, and the tree verifies against checkpoints from before and after."""
    command.upgrade(_config(url), "0002")
    engine = create_engine(url)
    with engine.begin() as conn:
        for row in rows(1000, 30, topic="atb.legacy", occurred=OLD):
            conn.execute(insert(audit_events).values(**_at_0002(row)))
    engine.dispose()
    command.upgrade(_config(url), "head")

    filler = Filler(url, tmp_path)  # the tree so far: the 30 old rows' leaves, from audit_leaves
    assert filler.frontier.size == 30
    filler.checkpoint()
    assert filler.append(rows(0, 60, occurred=OLD)) == 60  # new rows, expired as well
    assert filler.append(rows(60, 40)) == 40  # new rows, kept
    filler.checkpoint()
    owner = make_engine(url)
    with owner.connect() as conn:
        in_rows = conn.execute(text("SELECT min(leaf_idx), max(leaf_idx) FROM audit_events")).one()
    assert tuple(in_rows) == (30, 129)

    outcome = purge(owner, filler.signer, actor="compliance")
    assert outcome.removed == 90  # 30 legacy + 60 new, all past retention
    report = verify_store(owner, filler.signer.verifier, strict=True)
    assert report.ok, report.problems
    assert (report.leaves, report.purged, report.checkpoints) == (130, 90, 2)
    with owner.connect() as conn:
        kept_leaves = conn.execute(text("SELECT count(*) FROM audit_leaves")).scalar_one()
    assert kept_leaves == 90  # the 30 it had, and the 60 moved out of the purged rows
    assert filler.append(rows(100, 10)) == 10
    filler.checkpoint()
    assert verify_store(owner, filler.signer.verifier, strict=True).ok
    # The consumer offsets lost, then the purged records redelivered: their kept leaves still
    # say they were stored, so they are not stored again (the partition's rows are gone).
    with owner.begin() as conn:
        conn.execute(text("DELETE FROM audit_consumer_offsets"))
    assert filler.append(rows(1000, 30, topic="atb.legacy", occurred=OLD)) == 0
    assert filler.append(rows(0, 60, occurred=OLD)) == 0
    assert verify_store(owner, filler.signer.verifier, strict=True).ok
