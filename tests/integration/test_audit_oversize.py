"""A record above AUDIT_MAX_STORED_BYTES is stored as its digest, size and first bytes, and still verifies.

On SQLite and PostgreSQL (migration 0005): the row keeps the first
AUDIT_PREFIX_BYTES of a real 1,040,000-byte record, says how long the record was
and what its SHA-256 was, and its Merkle leaf commits to the prefix, the length
and the digest: changing any of them behind the triggers' back fails `verify`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from audit_sink.adapters.db import make_engine
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.retention import RetentionPolicy
from audit_sink.domain.rows import UNDECODABLE, RecordMeta, row_for
from audit_sink.evidence import verify_store
from contracts.limits import AUDIT_MAX_STORED_BYTES, AUDIT_PREFIX_BYTES
from tests.audit_db import AuditDb
from tests.audit_support import Filler, bypassing_triggers, rows

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
ORIGINAL = secrets.token_bytes(1_040_000)


def test_an_oversize_record_keeps_a_prefix_its_size_and_digest() -> None:
    row = row_for(
        RecordMeta("t1.atb.poa.requests", 0, 3, b"poison", ORIGINAL, 1_700_000_000_000),
        recorded_at=NOW,
        retention=RetentionPolicy(),
    )
    assert len(ORIGINAL) > AUDIT_MAX_STORED_BYTES
    assert row.raw == ORIGINAL[:AUDIT_PREFIX_BYTES]
    assert row.received_len == len(ORIGINAL)
    assert row.received_sha256 == "sha256:" + hashlib.sha256(ORIGINAL).hexdigest()
    assert row.event_type == UNDECODABLE
    assert row.decode_error is not None
    assert row.decode_error.startswith("oversize: ")
    leaf = json.loads(leaf_bytes(row))
    assert (leaf["raw_len"], leaf["received_len"]) == (AUDIT_PREFIX_BYTES, len(ORIGINAL))
    assert leaf["received_sha256"] == row.received_sha256
    assert leaf["raw_sha256"] == hashlib.sha256(ORIGINAL[:AUDIT_PREFIX_BYTES]).hexdigest()


def test_a_record_at_the_bound_is_kept_whole_and_its_leaf_is_unchanged() -> None:
    whole = b" " * AUDIT_MAX_STORED_BYTES
    row = row_for(RecordMeta("t1.atb.audit", 0, 1, None, whole, 0), recorded_at=NOW, retention=RetentionPolicy())
    assert row.raw == whole
    assert (row.received_len, row.received_sha256) == (None, None)
    assert "received_len" not in json.loads(leaf_bytes(row))  # leaves of ordinary rows are as before


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE audit_events SET received_len = received_len - 1 WHERE received_len IS NOT NULL",
        "UPDATE audit_events SET received_sha256 = 'sha256:' || 'ab' WHERE received_len IS NOT NULL",
        "UPDATE audit_events SET received_len = NULL WHERE received_len IS NOT NULL",
    ],
)
def test_an_oversize_row_is_stored_verified_and_its_leaf_commits_to_size_and_digest(
    audit_db: AuditDb, tmp_path: Path, tamper: str
) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    oversize = row_for(
        RecordMeta("t1.atb.poa.requests", 0, 100, b"poison", ORIGINAL, 1_700_000_000_000),
        recorded_at=NOW,
        retention=RetentionPolicy(),
    )
    assert filler.append([*rows(0, 5), oversize]) == 6
    filler.checkpoint()
    engine = make_engine(audit_db.owner)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT raw, received_len, received_sha256 FROM audit_events WHERE received_len IS NOT NULL")
        ).one()
    assert (bytes(stored[0]), stored[1], stored[2]) == (
        ORIGINAL[:AUDIT_PREFIX_BYTES],
        len(ORIGINAL),
        "sha256:" + hashlib.sha256(ORIGINAL).hexdigest(),
    )
    assert verify_store(engine, filler.signer.verifier, strict=True).ok

    with bypassing_triggers(engine, "audit_events"), engine.begin() as conn:
        conn.execute(text(tamper))
    assert not verify_store(engine, filler.signer.verifier, strict=True).ok
