"""The audit store on SQLite and PostgreSQL: append-only by the database, tamper-evident by the tree.

Every test runs on both backends (`audit_db`). Tampering goes around the
triggers the way a DBA could (PostgreSQL: `ALTER TABLE ... DISABLE TRIGGER`;
SQLite: drop them), and `verify_store` must find it, every time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from audit_sink.adapters.db import make_engine
from audit_sink.adapters.signing import load_or_create_signer
from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.merkle import Frontier, leaf_hash
from audit_sink.evidence import verify_store
from tests.audit_db import AuditDb, new_database
from tests.audit_support import ORIGIN, Filler, bypassing_triggers, rows

APPEND_ONLY = (
    "audit_leaves",
    "audit_checkpoints",
    "audit_legal_holds",
    "audit_legal_hold_releases",
    "audit_purges",
    "audit_tombstones",
)
EVENTS = 1100


def _refused(engine: Engine, sql: str) -> None:
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text(sql))
    message = str(caught.value.orig)
    assert "append-only" in message or "refused" in message or "permission denied" in message, message


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def test_triggers_refuse_update_delete_truncate_even_for_the_owner(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.fill(120, batch=40, every=80)
    owner = make_engine(audit_db.owner)
    with owner.begin() as conn:  # a hold and its release, so those tables have rows to refuse changes to
        conn.execute(
            text(
                "INSERT INTO audit_legal_holds (request_id, reason, placed_by, placed_at) "
                "VALUES ('req-0001', 'case 1', 'test', CURRENT_TIMESTAMP)"
            )
        )
    before = {t: _count(owner, t) for t in ("audit_events", *APPEND_ONLY)}
    _refused(owner, "UPDATE audit_events SET event_type = 'x'")
    _refused(owner, "UPDATE audit_events SET raw = raw WHERE seq = 1")
    _refused(owner, "DELETE FROM audit_events WHERE seq = 1")
    _refused(owner, "DELETE FROM audit_events")  # SQLite's TRUNCATE
    _refused(owner, "UPDATE audit_events SET leaf_hash = leaf_hash WHERE seq = 1")  # a row's own leaf
    for table in ("audit_checkpoints", "audit_legal_holds"):
        _refused(owner, f"UPDATE {table} SET id = id")  # noqa: S608 - constant table names
        _refused(owner, f"DELETE FROM {table}")  # noqa: S608
    if audit_db.kind == "postgresql":
        for table in ("audit_events", *APPEND_ONLY):
            _refused(owner, f"TRUNCATE {table} CASCADE")
    assert {t: _count(owner, t) for t in before} == before
    assert verify_store(owner, filler.signer.verifier, strict=True).ok
    # audit_leaves keeps the leaves of purged rows and of rows older than revision 0004: give it one.
    with owner.begin() as conn:
        conn.execute(
            text('INSERT INTO audit_leaves (idx, topic, "partition", "offset", leaf_hash) VALUES (9999, :t, 0, 0, :h)'),
            {"t": "atb.kept", "h": bytes(32)},
        )
    _refused(owner, "UPDATE audit_leaves SET idx = idx")
    _refused(owner, "DELETE FROM audit_leaves")
    assert _count(owner, "audit_leaves") == 1


def test_the_service_role_may_only_insert_and_select(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """PostgreSQL only: SQLite has no roles, the triggers are its whole enforcement."""
    audit_db = new_database("postgresql", request, tmp_path)
    filler = Filler(audit_db.writer, tmp_path)  # the writer appends: INSERT works
    filler.fill(30, batch=10, every=30)
    writer = make_engine(audit_db.writer)
    for sql in (
        "UPDATE audit_events SET event_type = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "DELETE FROM audit_leaves",
        "UPDATE audit_checkpoints SET note = ''",
        "INSERT INTO audit_purges (id, purged_at, purged_by, removed, note) VALUES ('p', now(), 'x', 0, 'n')",
        "INSERT INTO audit_legal_holds (request_id, reason, placed_by, placed_at) VALUES ('r', 'x', 'x', now())",
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
    ):
        with pytest.raises(DBAPIError) as caught, writer.begin() as conn:
            conn.execute(text(sql))
        assert "permission denied" in str(caught.value.orig) or "must be owner" in str(caught.value.orig), sql
    purger = make_engine(audit_db.purger)
    _refused(purger, "UPDATE audit_events SET event_type = 'x'")
    _refused(purger, "TRUNCATE audit_events")
    _refused(purger, "DELETE FROM audit_events")  # nothing is past retention: the trigger refuses
    assert _count(writer, "audit_events") == 30


def test_a_batch_over_more_partitions_than_one_lookup_takes_is_stored_once(audit_db: AuditDb, tmp_path: Path) -> None:
    """1,200 partitions in one batch: the already-stored lookup goes in several statements, still exact."""
    filler = Filler(audit_db.writer, tmp_path)
    spread = [row._replace(partition=i, offset=7) for i, row in enumerate(rows(0, 1200))]
    assert filler.append(spread[:700]) == 700
    assert filler.append(spread) == 500  # the first 700 partitions are past offset 7 already
    assert filler.append(spread) == 0
    assert _count(make_engine(audit_db.owner), "audit_events") == 1200


def test_replayed_records_are_stored_once(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    assert filler.append(rows(0, 200)) == 200
    assert filler.append(rows(0, 200)) == 0  # redelivery of the same batch
    assert filler.append(rows(150, 100)) == 50  # overlapping batch: only the new half
    other_group = Filler(audit_db.writer, tmp_path, group="another-group")
    assert other_group.append(rows(0, 250)) == 0  # another group, same records: still once
    filler.checkpoint()
    engine = make_engine(audit_db.owner)
    assert _count(engine, "audit_events") == _count(engine, "audit_tree") == 250
    assert verify_store(engine, filler.signer.verifier, strict=True).ok


# --- tampering: each scenario edits a store of >= 1,000 events behind the triggers' back ----------------


def _flip_raw(engine: Engine, seq: int) -> None:
    with engine.begin() as conn:
        raw = bytes(conn.execute(text("SELECT raw FROM audit_events WHERE seq = :s"), {"s": seq}).scalar_one())
        pos = random.randrange(len(raw))
        raw = raw[:pos] + bytes([raw[pos] ^ (1 << random.randrange(8))]) + raw[pos + 1 :]
        conn.execute(text("UPDATE audit_events SET raw = :r WHERE seq = :s"), {"r": raw, "s": seq})


def _delete_row(engine: Engine) -> None:
    """The row goes, and the leaf it carries with it."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 500"))


def _delete_row_keeping_its_leaf(engine: Engine) -> None:
    """A DBA who knows the layout: the leaf moves to audit_leaves, as a purge would, but no tombstone."""
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO audit_leaves (idx, topic, "partition", "offset", leaf_hash) '
                'SELECT leaf_idx, topic, "partition", "offset", leaf_hash FROM audit_events WHERE seq = 400'
            )
        )
        conn.execute(text("DELETE FROM audit_events WHERE seq = 400"))


def _insert_row(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO audit_events (topic, "partition", "offset", event_id, event_type, occurred_at, '
                "recorded_at, retain_until, raw, redacted) SELECT topic, \"partition\", 99999, 'forged', event_type, "
                "occurred_at, recorded_at, retain_until, raw, redacted FROM audit_events WHERE seq = 10"
            )
        )


def _insert_row_with_leaf_mid_tree(engine: Engine) -> None:
    """A forged row with a correct leaf hash, spliced into the middle of the leaf order."""
    forged = rows(99_999, 1)[0]
    from audit_sink.domain.leaf import leaf_bytes

    with engine.begin() as conn:
        size = int(conn.execute(text("SELECT max(leaf_idx) FROM audit_events")).scalar_one()) + 1
        for idx in range(size - 1, 599, -1):  # shift leaves 600.. up by one (descending: no key clash)
            conn.execute(text("UPDATE audit_events SET leaf_idx = leaf_idx + 1 WHERE leaf_idx = :i"), {"i": idx})
        conn.execute(
            text(
                'INSERT INTO audit_events (topic, "partition", "offset", event_id, event_type, occurred_at, '
                "recorded_at, retain_until, raw, redacted, record_key, leaf_idx, leaf_hash) VALUES (:t, :p, :o, :e, "
                ":ty, :oc, :rc, :ru, :raw, :red, :k, 600, :h)"
            ),
            {
                "t": forged.topic,
                "p": forged.partition,
                "o": forged.offset,
                "e": forged.event_id,
                "ty": forged.event_type,
                "oc": forged.occurred_at,
                "rc": forged.recorded_at,
                "ru": forged.retain_until,
                "raw": forged.raw,
                "red": forged.redacted,
                "k": forged.record_key,
                "h": leaf_hash(leaf_bytes(forged)),
            },
        )


def _swap_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = 300"))
        conn.execute(text("UPDATE audit_events SET seq = 300 WHERE seq = 301"))
        conn.execute(text("UPDATE audit_events SET seq = 301 WHERE seq = -1"))


def _swap_leaves(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET leaf_idx = -1 WHERE leaf_idx = 700"))
        conn.execute(text("UPDATE audit_events SET leaf_idx = 700 WHERE leaf_idx = 701"))
        conn.execute(text("UPDATE audit_events SET leaf_idx = 701 WHERE leaf_idx = -1"))


def _truncate_tail(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > 1000"))


def _truncate_everything(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events"))


def _rewrite_row_and_leaf(engine: Engine) -> None:
    """Change a row and recompute its leaf hash: only the signed roots can tell."""
    from audit_sink.adapters.ledger import iter_rows
    from audit_sink.domain.leaf import leaf_bytes

    seq, row = next((s, r) for s, r in iter_rows(engine) if s == 250)
    changed = row._replace(producer="spiffe://atb.local/evil")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET producer = :p, leaf_hash = :h WHERE seq = :s"),
            {"p": changed.producer, "h": leaf_hash(leaf_bytes(changed)), "s": seq},
        )


def _delete_checkpoints(engine: Engine) -> None:
    """Dropping the checkpoint table leaves the ones announced in atb.audit rows: none here, so none at all."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_checkpoints"))


SCENARIOS: dict[str, tuple[Callable[[Engine], None], tuple[str, ...], str]] = {
    "delete a row": (_delete_row, ("audit_events",), "not contiguous"),
    "delete a row keeping its leaf": (_delete_row_keeping_its_leaf, ("audit_events",), "missing (deleted)"),
    "insert a row": (_insert_row, ("audit_events",), "has no leaf (inserted)"),
    "insert a row with a leaf mid-tree": (
        _insert_row_with_leaf_mid_tree,
        ("audit_events",),
        "does not match the signed root",
    ),
    "reorder two rows": (_swap_rows, ("audit_events",), "out of order"),
    "reorder two leaves": (_swap_leaves, ("audit_events",), "does not match the signed root"),
    "truncate the tail": (_truncate_tail, ("audit_events",), "truncated"),
    "truncate everything": (_truncate_everything, ("audit_events",), "truncated"),
    "rewrite a row and its leaf hash": (
        _rewrite_row_and_leaf,
        ("audit_events",),
        "does not match the signed root",
    ),
    "delete every checkpoint": (_delete_checkpoints, ("audit_checkpoints",), "no signed checkpoint"),
}


@pytest.fixture
def big_store(audit_db: AuditDb, tmp_path: Path) -> tuple[AuditDb, Filler]:
    filler = Filler(audit_db.writer, tmp_path)
    filler.fill(EVENTS, batch=100, every=300)
    assert verify_store(make_engine(audit_db.owner), filler.signer.verifier, strict=True).ok
    return audit_db, filler


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_tampering_is_detected(big_store: tuple[AuditDb, Filler], scenario: str) -> None:
    audit_db, filler = big_store
    tamper, tables, expected = SCENARIOS[scenario]
    owner = make_engine(audit_db.owner)
    with bypassing_triggers(owner, *tables):
        tamper(owner)
    report = verify_store(owner, filler.signer.verifier)
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems


def test_any_flipped_bit_in_any_row_is_detected_every_time(big_store: tuple[AuditDb, Filler]) -> None:
    audit_db, filler = big_store
    owner = make_engine(audit_db.owner)
    rng = random.Random(7)
    columns = (
        "raw",
        "event_id",
        "event_type",
        "request_id",
        "producer",
        "occurred_at",
        "recorded_at",
        "retain_until",
        "record_key",
        "partition",
        "offset",
        "topic",
    )
    with bypassing_triggers(owner, "audit_events"):
        for attempt in range(40):
            seq = rng.randrange(1, EVENTS + 1)
            column = columns[attempt % len(columns)]
            with owner.connect() as conn:
                original = conn.execute(
                    text(f'SELECT "{column}" FROM audit_events WHERE seq = :s'),  # noqa: S608 - constant columns
                    {"s": seq},
                ).scalar()
            if column == "raw":
                random.seed(attempt)
                _flip_raw(owner, seq)
            else:
                _change(owner, seq, column, original)
            report = verify_store(owner, filler.signer.verifier)
            assert not report.ok, f"change of {column} in row {seq} went unnoticed"
            with owner.begin() as conn:
                restore = text(f'UPDATE audit_events SET "{column}" = :v WHERE seq = :s')  # noqa: S608
                conn.execute(restore, {"v": original, "s": seq})
            assert verify_store(owner, filler.signer.verifier).ok, f"restoring row {seq} did not restore the store"


def _change(engine: Engine, seq: int, column: str, original: object) -> None:
    if isinstance(original, bytes | memoryview):
        value: object = bytes(original)[:-1] + bytes([bytes(original)[-1] ^ 1]) if bytes(original) else b"x"
    elif isinstance(original, int):
        value = original + 1
    elif original is None:
        value = "x"
    elif isinstance(original, str) and (column.endswith("_at") or column == "retain_until"):
        value = original[:-1] + ("1" if original[-1] != "1" else "2")  # SQLite keeps times as text
    elif isinstance(original, str):
        value = original[:-1] + chr(ord(original[-1]) ^ 1)
    else:  # a datetime (PostgreSQL)
        value = original + timedelta(microseconds=1)  # type: ignore[operator]
    with engine.begin() as conn:
        change = text(f'UPDATE audit_events SET "{column}" = :v WHERE seq = :s')  # noqa: S608 - constant columns
        conn.execute(change, {"v": value, "s": seq})


def test_a_fork_and_an_inconsistent_checkpoint_are_reported(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.fill(300, batch=100, every=100)
    engine = make_engine(audit_db.owner)
    assert verify_store(engine, filler.signer.verifier).ok
    # The key signs a second tree of the same size with a different root: a fork.
    other = Frontier.of([leaf_hash(b"other %d" % i) for i in range(300)])
    signer = load_or_create_signer(tmp_path / "checkpoint.key", ORIGIN)
    forked = Checkpoint(ORIGIN, 300, other.root())
    filler.store.add_checkpoint(300, forked.root, signer.sign(forked.body()).render(), filler_time())
    report = verify_store(engine, filler.signer.verifier)
    assert any(p.startswith("fork: two signed checkpoints of size 300") for p in report.problems), report.problems
    # A later checkpoint that does not extend the earlier ones.
    bigger = Frontier.of([leaf_hash(b"x %d" % i) for i in range(350)])
    filler.append(rows(300, 50))
    cp = Checkpoint(ORIGIN, 350, bigger.root())
    filler.store.add_checkpoint(350, cp.root, signer.sign(cp.body()).render(), filler_time())
    report = verify_store(engine, filler.signer.verifier)
    assert any("not consistent" in p for p in report.problems), report.problems


def test_a_checkpoint_signed_by_another_key_is_rejected(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.fill(50, batch=50, every=50)
    stranger = load_or_create_signer(tmp_path / "other" / "k.key", ORIGIN)
    cp = Checkpoint(ORIGIN, 50, filler.frontier.root())
    filler.store.add_checkpoint(50, cp.root, stranger.sign(cp.body()).render(), filler_time())
    report = verify_store(make_engine(audit_db.owner), filler.signer.verifier)
    assert any("checkpoint note rejected" in p for p in report.problems)


def test_an_unsigned_tail_fails_only_strict_verification(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.fill(100, batch=50, every=100)
    filler.append(rows(100, 10))
    engine = make_engine(audit_db.owner)
    report = verify_store(engine, filler.signer.verifier)
    assert report.ok
    assert report.uncovered == 10
    assert not verify_store(engine, filler.signer.verifier, strict=True).ok


def filler_time() -> datetime:
    return datetime.now(UTC)


def test_a_replay_is_skipped_even_if_the_offsets_table_was_lost(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.append(rows(0, 100))
    owner = make_engine(audit_db.owner)
    with owner.begin() as conn:
        conn.execute(text("DELETE FROM audit_consumer_offsets"))  # not append-only: offsets are state
    assert filler.append(rows(0, 120)) == 20  # a record below the highest stored leaf is not stored again
    filler.checkpoint()
    assert _count(owner, "audit_events") == 120
    assert verify_store(owner, filler.signer.verifier, strict=True).ok
