"""The sink's log head on both databases: a count-triggered checkpoint is sealed into the append that
reaches the count, commits with its rows or not at all, and is deferred when another writer got in between."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit_sink.adapters.db import AuditStore, make_engine
from audit_sink.adapters.signing import load_or_create_signer, verify_note
from audit_sink.domain.checkpoint import Checkpoint, VerifierKey
from audit_sink.domain.merkle import tree_root
from audit_sink.evidence import verify_store
from audit_sink.head import LogHead
from tests.audit_db import AuditDb
from tests.audit_support import ORIGIN, Filler, offsets_of, rows


def _head(tmp_path: Path, every: int) -> LogHead:
    return LogHead(load_or_create_signer(tmp_path / "checkpoint.key", ORIGIN), every=every, interval_s=3600)


def _key(tmp_path: Path) -> VerifierKey:
    return load_or_create_signer(tmp_path / "checkpoint.key", ORIGIN).verifier


def _count(url: str, table: str) -> int:
    with make_engine(url).connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def test_a_checkpoint_is_sealed_into_the_append_that_reaches_every(audit_db: AuditDb, tmp_path: Path) -> None:
    store, head = AuditStore(make_engine(audit_db.writer), "g"), _head(tmp_path, every=250)
    sealed = []
    for start in range(0, 500, 100):
        result = store.append(rows(start, 100), offsets_of(rows(start, 100)), head.seal)
        head.grow(result)
        sealed.append(result.checkpoint.size if result.checkpoint else None)
    assert sealed == [None, None, 300, None, None]  # 300 ≥ 250; then 200 more pending
    assert (head.signed_size, head.pending, head.checkpoints) == (300, 200, 1)
    assert not head.due()  # 200 < 250, and the interval is an hour
    notes = store.checkpoint_notes()
    assert len(notes) == 1
    cp = Checkpoint.parse(verify_note(notes[0], _key(tmp_path)).text)
    assert (cp.size, cp.root) == (300, tree_root(store.leaf_hashes(0, 300)))
    report = verify_store(make_engine(audit_db.owner), _key(tmp_path))
    assert report.ok, report.problems
    assert report.uncovered == 200  # the last two batches wait for the next checkpoint


def test_a_sealed_checkpoint_commits_with_its_rows_or_not_at_all(audit_db: AuditDb, tmp_path: Path) -> None:
    store, head = AuditStore(make_engine(audit_db.writer), "g"), _head(tmp_path, every=50)
    batch = rows(0, 100)
    # The offsets are written after the rows, the leaves and the sealed checkpoint: make that last step fail.
    broken = {(None, 0): 100}
    with pytest.raises(DBAPIError):
        store.append(batch, broken, head.seal)  # type: ignore[arg-type]
    for table in ("audit_events", "audit_leaves", "audit_checkpoints", "audit_consumer_offsets"):
        assert _count(audit_db.owner, table) == 0, table
    assert (head.frontier.size, head.signed_size, head.checkpoints) == (0, 0, 0)  # sealing changed nothing
    result = store.append(batch, offsets_of(batch), head.seal)
    head.grow(result)
    assert result.checkpoint is not None
    assert result.checkpoint.size == 100
    assert _count(audit_db.owner, "audit_checkpoints") == 1


def test_another_writer_in_between_defers_the_seal(audit_db: AuditDb, tmp_path: Path) -> None:
    store, head = AuditStore(make_engine(audit_db.writer), "g"), _head(tmp_path, every=50)
    Filler(audit_db.writer, tmp_path, group="other").append(rows(0, 40, topic="atb.other"))
    batch = rows(0, 100)
    result = store.append(batch, offsets_of(batch), head.seal)
    assert result.first_index == 40
    assert result.checkpoint is None  # our tree (size 0) is not the stored one (40): no seal
    head.grow(result, store.leaf_hashes(0, result.first_index))
    assert head.frontier.size == 140
    assert head.due()
    cp = head.sign()
    store.add_checkpoint(cp.size, cp.root, cp.note, cp.created_at)
    head.signed(cp)
    assert cp.size == 140
    assert verify_store(make_engine(audit_db.owner), _key(tmp_path), strict=True).ok
