"""Retention on SQLite and PostgreSQL: purge only what is past retain_until and not on legal hold.

A purge keeps every leaf (tombstones keep the leaf text), so the tree, all old
checkpoints and the proofs of surviving events still verify afterwards. The
database itself refuses to delete anything else, even when asked directly.
Also: evidence bundles (export → offline check) and single-event proofs.
"""

from __future__ import annotations

import base64
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit_sink.adapters.db import make_engine
from audit_sink.adapters.ledger import HoldScope, active_holds, place_hold, purge, release_hold
from audit_sink.adapters.signing import load_or_create_signer
from audit_sink.domain import RetentionPolicy
from audit_sink.evidence import EvidenceError, check_bundle, check_proof, export_bundle, prove, verify_store
from contracts import AuditEvent
from tests.audit_db import AuditDb
from tests.audit_support import Filler, rows

OLD = datetime(2015, 3, 1, tzinfo=UTC)  # + 7 years = 2022: past retention
RECENT = datetime.now(UTC) - timedelta(days=200)  # past 90 days, far from 7 years


def _store_with_ages(audit_db: AuditDb, tmp_path: Path) -> Filler:
    access_logs = RetentionPolicy(days_by_event_type={AuditEvent.event_type: 90})
    filler = Filler(audit_db.writer, tmp_path)
    filler.append(rows(0, 100, occurred=OLD))  # 7-year events, expired (2 of them undecodable: same rule)
    filler.append(rows(100, 100, occurred=RECENT))  # 7-year events, kept
    filler.append(rows(200, 100, occurred=RECENT, retention=access_logs))  # 90-day events, expired
    filler.append(rows(300, 100, occurred=OLD, request_id="req-held"))  # expired but on hold
    filler.checkpoint()
    return filler


def _count(url: str, where: str = "") -> int:
    with make_engine(url).connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM audit_events {where}")).scalar_one())  # noqa: S608


def test_purge_removes_only_expired_unheld_rows_and_verification_still_passes(
    audit_db: AuditDb, tmp_path: Path
) -> None:
    filler = _store_with_ages(audit_db, tmp_path)
    purger = make_engine(audit_db.purger)
    hold = place_hold(purger, HoldScope(request_id="req-held"), reason="case 42", actor="legal")
    range_hold = place_hold(
        purger, HoldScope(since=OLD, until=OLD + timedelta(seconds=1)), reason="case 43", actor="legal"
    )
    assert {h[0] for h in active_holds(purger)} == {hold, range_hold}
    release_hold(purger, range_hold, reason="case 43 closed", actor="legal")

    outcome = purge(purger, filler.signer, actor="compliance")
    # 100 old + 98 decodable 90-day events (the 2 undecodable ones keep the default 7 years) + the 2 undecodable
    # old ones among req-held's offsets (no request id: the hold cannot cover them); 98 held rows stay.
    assert outcome.removed == 200
    assert outcome.held_back == 98
    assert _count(audit_db.owner) == 400 - 200
    assert _count(audit_db.owner, "WHERE request_id = 'req-held'") == 98
    report = verify_store(make_engine(audit_db.owner), filler.signer.verifier, strict=True)
    assert report.ok, report.problems
    assert (report.leaves, report.purged) == (400, 200)
    # A second purge finds nothing new, and says so in its own signed record.
    assert purge(purger, filler.signer, actor="compliance").removed == 0
    assert verify_store(make_engine(audit_db.owner), filler.signer.verifier).ok

    release_hold(purger, hold, reason="case 42 closed", actor="legal")
    assert purge(purger, filler.signer, actor="compliance").removed == 98
    assert verify_store(make_engine(audit_db.owner), filler.signer.verifier).ok


def test_the_database_refuses_to_purge_unexpired_or_held_rows(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = _store_with_ages(audit_db, tmp_path)
    purger = make_engine(audit_db.purger)
    place_hold(purger, HoldScope(request_id="req-held"), reason="case 42", actor="legal")
    with purger.begin() as conn:
        conn.execute(
            text("INSERT INTO audit_purges (id, purged_at, purged_by, removed, note) VALUES ('p1', :t, 'x', 1, 'n')"),
            {"t": datetime.now(UTC)},
        )
    forged = (
        'INSERT INTO audit_tombstones (leaf_idx, purge_id, topic, "partition", "offset", leaf) '
        'SELECT seq + 100000, \'p1\', topic, "partition", "offset", raw FROM audit_events WHERE '
    )
    for where in ("seq = 150", "request_id = 'req-held'"):  # recent (kept 7 years); expired but held
        # A forged tombstone first: the trigger refuses it; then the delete itself.
        with pytest.raises(DBAPIError, match="refused"), purger.begin() as conn:
            conn.execute(text(forged + where))
        with pytest.raises(DBAPIError, match="refused"), purger.begin() as conn:
            conn.execute(text(f"DELETE FROM audit_events WHERE {where}"))  # noqa: S608
    assert _count(audit_db.owner) == 400
    # The store is intact; the only finding is the unsigned purge record this test wrote.
    report = verify_store(make_engine(audit_db.owner), filler.signer.verifier)
    assert report.problems == ("purge record p1 rejected: a signed note is text, a blank line, then signature lines",)


def test_a_tombstone_forged_behind_the_triggers_is_detected(audit_db: AuditDb, tmp_path: Path) -> None:
    """A DBA deletes an unexpired row and writes a tombstone for it: the signed purge record does not cover it."""
    from tests.audit_support import bypassing_triggers

    filler = _store_with_ages(audit_db, tmp_path)
    purge(make_engine(audit_db.purger), filler.signer, actor="compliance")
    owner = make_engine(audit_db.owner)
    with bypassing_triggers(owner, "audit_events", "audit_tombstones"), owner.begin() as conn:
        purge_id = conn.execute(text("SELECT id FROM audit_purges")).scalar_one()
        conn.execute(
            text(
                'INSERT INTO audit_tombstones (leaf_idx, purge_id, topic, "partition", "offset", leaf) '
                'SELECT l.idx, :p, l.topic, l."partition", l."offset", e.raw FROM audit_leaves l JOIN audit_events e '
                'ON e.topic = l.topic AND e."partition" = l."partition" AND e."offset" = l."offset" WHERE e.seq = 150'
            ),
            {"p": purge_id},
        )
        conn.execute(text("DELETE FROM audit_events WHERE seq = 150"))
    report = verify_store(owner, filler.signer.verifier)
    assert not report.ok
    assert any("tombstone" in p for p in report.problems), report.problems


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_bundle_checks_offline_and_detects_changes(audit_db: AuditDb, tmp_path: Path, fmt: str) -> None:
    filler = Filler(audit_db.writer, tmp_path / "keys")
    filler.fill(400, batch=100, every=200)
    engine = make_engine(audit_db.owner)
    key = filler.signer.verifier
    now = datetime.now(UTC)
    bundle = tmp_path / "bundle"
    summary = export_bundle(engine, key, bundle, since=now - timedelta(days=1), until=now + timedelta(days=1), fmt=fmt)
    assert summary.events == 400
    checkpoint, count, problems = check_bundle(bundle, key)
    assert (checkpoint.size, count, problems) == (400, 400, [])
    one = tmp_path / "one"
    export_bundle(engine, key, one, since=None, until=None, request_id="req-0005", fmt=fmt)
    assert check_bundle(one, key)[1:] == (len([r for r in rows(0, 400) if r.request_id == "req-0005"]), [])

    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    events = tampered / f"events.{fmt}"
    events.write_text(events.read_text().replace("spiffe://atb.local/svc/test", "spiffe://atb.local/svc/tesx", 1))
    assert check_bundle(tampered, key)[2]
    stranger = load_or_create_signer(tmp_path / "stranger.key", key.name).verifier
    with pytest.raises(EvidenceError):
        check_bundle(bundle, stranger)


def test_a_proof_checks_with_the_public_key_alone(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.fill(300, batch=100, every=100)
    engine = make_engine(audit_db.owner)
    proof = json.loads(json.dumps(prove(engine, filler.signer.verifier, "evt-000123")))
    assert check_proof(proof, filler.signer.verifier).size == 300
    for index in range(len(proof["inclusion_path"])):
        forged = json.loads(json.dumps(proof))
        element = bytearray(base64.b64decode(forged["inclusion_path"][index]))
        element[0] ^= 1
        forged["inclusion_path"][index] = base64.b64encode(bytes(element)).decode()
        with pytest.raises(EvidenceError):
            check_proof(forged, filler.signer.verifier)
    other = json.loads(json.dumps(proof))
    other["raw"] = base64.b64encode(b"something else").decode()
    with pytest.raises(EvidenceError, match="digest"):
        check_proof(other, filler.signer.verifier)
    with pytest.raises(EvidenceError, match="no stored event"):
        prove(engine, filler.signer.verifier, "evt-nope")
