"""Bearer tokens leave the audit store, and its evidence still verifies (migration 0006), on SQLite and PostgreSQL.

A store at revision 0005 holds ActionRequested rows with the PoA token the agent
presented, AuditEvents and signed checkpoints; an inclusion proof is taken. After
the upgrade no token is left, every old leaf hash and checkpoint still holds, the
old proof still verifies, new proofs and bundles verify, the redacted bytes
cannot be swapped, and a SIEM finds `event_type = 'poa_issued'`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, insert, select, text

from atb.dev.postgres import TempPostgres
from audit_sink.adapters.db import AuditStore, audit_events, audit_siem, audit_tree, make_engine
from audit_sink.adapters.ledger import iter_rows, purge
from audit_sink.adapters.signing import NoteSigner, load_or_create_signer
from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import Frontier, MerkleTree, leaf_hash
from audit_sink.domain.redaction import REDACTION_TOPIC
from audit_sink.domain.retention import RetentionPolicy
from audit_sink.domain.rows import AuditRow, RecordMeta, row_for
from audit_sink.evidence import EvidenceError, check_bundle, check_proof, export_bundle, prove, verify_store
from contracts import ActionRequested, AuditEvent, encode_envelope, make_envelope
from tests.audit_support import ORIGIN, bypassing_triggers

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SOURCE = "spiffe://atb.local/svc/broker-client"
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = datetime(2015, 3, 1, tzinfo=UTC)  # + 7 years: past retention


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    server: TempPostgres = request.getfixturevalue("postgres_server")
    name = f"redact_{secrets.token_hex(4)}"
    server.create_database(name)
    return server.url("owner", name)


def token(i: int) -> str:
    return f"eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ0b2tlbi17{i:04d}fQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0{i:04d}"


def action_bytes(i: int, occurred: datetime) -> bytes:
    payload = ActionRequested(
        request_id=f"req-{i:04d}",
        action_id=f"act-{i}",
        agent_id="spiffe://atb.local/agent/crm-bot",
        tenant="acme",
        action="crm.contact.update",
        resource=f"crm:contact/{i}",
        params={"email": f"user{i}@example.com"},
        poa=token(i),
        requested_at=occurred,
    )
    return encode_envelope(make_envelope(payload, source=SOURCE, event_id=f"act-evt-{i:04d}", time=occurred))


def audit_bytes(i: int, audit_type: str) -> bytes:
    payload = AuditEvent(
        audit_type=audit_type, request_id=f"req-{i:04d}", actor=SOURCE, outcome="success", occurred_at=NOW
    )
    return encode_envelope(make_envelope(payload, source=SOURCE, event_id=f"aud-evt-{i:04d}", time=NOW))


def as_before_0006(row: AuditRow, value: bytes) -> AuditRow:
    """The row the sink stored before this revision: the bytes as received, nothing redacted, no audit name."""
    return row._replace(raw=value, redacted=False, received_sha256=None, audit_type=None)


def old_rows() -> list[AuditRow]:
    out = []
    for i in range(40):
        if i % 4 == 3:
            topic, value = "atb.audit", audit_bytes(i, "poa_issued" if i == 7 else "approval_vote_counted")
        else:
            topic, value = "atb.broker.actions", action_bytes(i, OLD if i < 6 else NOW)
        meta = RecordMeta(topic, i % 2, i, f"k{i}".encode(), value, int(NOW.timestamp() * 1000))
        row = row_for(meta, recorded_at=NOW + timedelta(microseconds=i), retention=RetentionPolicy())
        out.append(as_before_0006(row, value))
    return out


class OldStore:
    """Writes rows and checkpoints the way a 0005 sink did (its own leaf in each row)."""

    def __init__(self, url: str, key_dir: Path) -> None:
        self.engine = make_engine(url)
        self.signer: NoteSigner = load_or_create_signer(key_dir / "checkpoint.key", ORIGIN)
        self.hashes: list[bytes] = []
        self.notes: dict[int, str] = {}

    def append(self, rows: list[AuditRow]) -> None:
        with self.engine.begin() as conn:
            for row in rows:
                values = row._asdict()
                values.pop("audit_type")
                values.pop("facets")  # not a column: stored beside the row since 0010
                digest = leaf_hash(leaf_bytes(row))
                conn.execute(insert(audit_events).values(**values, leaf_idx=len(self.hashes), leaf_hash=digest))
                self.hashes.append(digest)

    def checkpoint(self) -> None:
        cp = Checkpoint(ORIGIN, len(self.hashes), Frontier.of(self.hashes).root())
        note = self.signer.sign(cp.body()).render()
        AuditStore(self.engine, "test").add_checkpoint(cp.size, cp.root, note, datetime.now(UTC))
        self.notes[cp.size] = note

    def proof(self, index: int, row: AuditRow) -> dict[str, object]:
        """What `atb audit prove` printed before the upgrade (the token in `raw`)."""
        size = len(self.hashes)
        path = MerkleTree(self.hashes).inclusion_proof(index)
        return {
            "format": "atb-audit-proof/1",
            "verifier_key": str(self.signer.verifier),
            "checkpoint": self.notes[size],
            "leaf_index": index,
            "tree_size": size,
            "leaf": base64.b64encode(leaf_bytes(row)).decode(),
            "raw": base64.b64encode(row.raw).decode(),
            "inclusion_path": [base64.b64encode(h).decode() for h in path],
        }


def sign_tip(engine: Engine, signer: NoteSigner) -> None:
    store = AuditStore(engine, "test")
    frontier = Frontier.of(store.leaf_hashes())
    cp = Checkpoint(ORIGIN, frontier.size, frontier.root())
    store.add_checkpoint(cp.size, cp.root, signer.sign(cp.body()).render(), datetime.now(UTC))


def all_raw(engine: Engine) -> bytes:
    with engine.connect() as conn:
        return b"\n".join(bytes(raw) for (raw,) in conn.execute(select(audit_events.c.raw)))


def test_an_upgraded_store_keeps_no_token_and_every_old_proof(url: str, tmp_path: Path) -> None:
    command.upgrade(_config(url), "0005")
    old = OldStore(url, tmp_path)
    rows = old_rows()
    old.append(rows[:20])
    old.checkpoint()
    old.append(rows[20:])
    old.checkpoint()
    proof = old.proof(9, rows[9])  # an ActionRequested, with its token
    assert token(9).encode() in base64.b64decode(str(proof["raw"]))
    assert token(9).encode() in all_raw(old.engine)
    with old.engine.connect() as conn:
        before = [bytes(h) for (h,) in conn.execute(select(audit_tree.c.leaf_hash).order_by(audit_tree.c.idx))]

    command.upgrade(_config(url), "head")
    engine, key = old.engine, old.signer.verifier

    stored = all_raw(engine)
    for i in range(40):
        assert token(i).encode() not in stored
    actions = {r.event_id: r for _, r in iter_rows(engine) if r.event_type == ActionRequested.event_type}
    assert len(actions) == 30
    for i in (0, 9, 38):
        row = actions[f"act-evt-{i:04d}"]
        data = json.loads(row.raw)["data"]
        assert data["poa"] == "sha256:" + hashlib.sha256(token(i).encode()).hexdigest()
        assert row.redacted
        assert row.received_sha256 == "sha256:" + hashlib.sha256(action_bytes(i, row.occurred_at)).hexdigest()
    with engine.connect() as conn:
        after = [bytes(h) for (h,) in conn.execute(select(audit_tree.c.leaf_hash).order_by(audit_tree.c.idx))]
        records = conn.execute(select(audit_events.c.offset).where(audit_events.c.topic == REDACTION_TOPIC)).all()
    assert after[:40] == before
    assert len(after) == 41
    assert len(records) == 1

    # Every old leaf hash and checkpoint still holds; the redaction record is not signed yet.
    report = verify_store(engine, key)
    assert report.ok, report.problems
    assert report.uncovered == 1
    assert not verify_store(engine, key, strict=True).ok
    assert check_proof(proof, key).size == 40  # the proof issued before the redaction
    sign_tip(engine, old.signer)
    assert verify_store(engine, key, strict=True).ok

    # New proofs: the leaf committed before the redaction, the stored bytes, and the record that binds them.
    fresh = prove(engine, key, "act-evt-0009")
    assert fresh["leaf"] == proof["leaf"]
    assert "redaction" in fresh
    assert token(9).encode() not in base64.b64decode(str(fresh["raw"]))
    assert check_proof(fresh, key).size == 41
    forged = copy.deepcopy(fresh)
    forged["raw"] = base64.b64encode(base64.b64decode(str(fresh["raw"])).replace(b"contact/9", b"contact/8")).decode()
    with pytest.raises(EvidenceError, match="redaction record commits to"):
        check_proof(forged, key)
    assert check_proof(prove(engine, key, "aud-evt-0007"), key).size == 41  # a row left as it was

    # Evidence bundles in both formats, with the SIEM's event_type and the CloudEvents type.
    for fmt in ("jsonl", "csv"):
        folder = tmp_path / f"bundle-{fmt}"
        summary = export_bundle(engine, key, folder, since=None, until=None, fmt=fmt)
        assert summary.events == 41
        _, count, problems = check_bundle(folder, key)
        assert (count, problems) == (41, [])
    lines = [json.loads(line) for line in (tmp_path / "bundle-jsonl" / "events.jsonl").read_text().splitlines()]
    issued = [r for r in lines if r["event_type"] == "poa_issued"]
    assert [(r["event_id"], r["ce_type"], r["audit_type"]) for r in issued] == [
        ("aud-evt-0007", AuditEvent.event_type, "poa_issued")
    ]
    assert {r["event_type"] for r in lines if r["topic"] == "atb.broker.actions"} == {ActionRequested.event_type}
    assert sum(r["redaction_leaf"] == 40 for r in lines) == 30
    renamed = (tmp_path / "bundle-jsonl" / "events.jsonl").read_text().replace('"poa_issued"', '"poa_revoked"', 1)
    (tmp_path / "bundle-jsonl" / "events.jsonl").write_text(renamed)
    assert any("differ from what its bytes say" in p for p in check_bundle(tmp_path / "bundle-jsonl", key)[2])

    # The stored view a SIEM reads.
    with engine.connect() as conn:
        found = conn.execute(
            select(audit_siem.c.event_id, audit_siem.c.ce_type).where(audit_siem.c.event_type == "poa_issued")
        ).all()
    assert [tuple(r) for r in found] == [("aud-evt-0007", AuditEvent.event_type)]

    # New rows are redacted at ingest; a purge of redacted rows keeps their committed leaves.
    value = action_bytes(100, NOW)
    new = row_for(
        RecordMeta("atb.broker.actions", 0, 100, b"k", value, 0), recorded_at=NOW, retention=RetentionPolicy()
    )
    AuditStore(engine, "test").append([new], {("atb.broker.actions", 0): 101})
    assert token(100).encode() not in all_raw(engine)
    outcome = purge(engine, old.signer, actor="compliance")
    assert outcome.removed == 5  # the ActionRequested rows of 2015, redacted by the migration
    sign_tip(engine, old.signer)
    report = verify_store(engine, key, strict=True)
    assert report.ok, report.problems
    assert report.purged == 5


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param("params", id="other bytes in a redacted row"),
        pytest.param("token", id="the token put back"),
        pytest.param("record", id="the redaction record rewritten"),
    ],
)
def test_a_tampered_redacted_row_fails_verification(url: str, tmp_path: Path, tamper: str) -> None:
    command.upgrade(_config(url), "0005")
    old = OldStore(url, tmp_path)
    rows = old_rows()
    old.append(rows)
    old.checkpoint()
    command.upgrade(_config(url), "head")
    sign_tip(old.engine, old.signer)
    engine = old.engine
    assert verify_store(engine, old.signer.verifier, strict=True).ok
    row = next(r for _, r in iter_rows(engine, event_id="act-evt-0010"))
    if tamper == "params":
        where, raw = "act-evt-0010", row.raw.replace(b"user10@", b"evil10@")
    elif tamper == "token":
        where, raw = "act-evt-0010", action_bytes(10, row.occurred_at)
    else:
        record = next(r for _, r in iter_rows(engine) if r.topic == REDACTION_TOPIC)
        where, raw = record.event_id, record.raw.replace(b'"leaf":10,', b'"leaf":11,')
        assert raw != record.raw
    with bypassing_triggers(engine, "audit_events"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET raw = :raw WHERE event_id = :id"), {"raw": raw, "id": where})
    report = verify_store(engine, old.signer.verifier, strict=True)
    assert not report.ok
    assert any("was altered" in p or "redacted twice" in p for p in report.problems), report.problems
