"""Witnessed checkpoints (C2SP tlog-witness / tlog-cosignature) against a real `atb witness` process.

The finding (issue 21): delete the newest rows together with the checkpoint rows
that cover them, back to an earlier signed checkpoint, and the store verifies by
itself. A checkpoint from outside the store (cosigned by a witness, or a trusted
file) names the rollback. The witness refuses to cosign a rollback, a fork, an
inconsistent proof and a checkpoint the log did not sign; and with the log's key
alone nobody can rewrite history past what a witness cosigned. SQLite and
PostgreSQL (`audit_db`); the sink's own submission code (`Witnessing`).
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from atb.cli import app
from audit_sink.adapters.db import AuditStore, SealedCheckpoint, make_engine
from audit_sink.adapters.ledger import iter_rows
from audit_sink.adapters.signing import load_or_create_signer, verify_cosignature, verify_note
from audit_sink.adapters.witnesses import fetch_latest
from audit_sink.domain.checkpoint import Checkpoint, SignedNote
from audit_sink.domain.cosignature import SIZE_CONTENT_TYPE, AddCheckpoint
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import MerkleTree, leaf_hash
from audit_sink.evidence import OutsideCheckpoints, verify_store
from audit_sink.settings import WitnessEndpoint
from audit_sink.witnessing import COSIGNED_AUDIT_TYPE, REFUSED_AUDIT_TYPE, Witnessing
from tests.audit_db import AuditDb
from tests.audit_support import ORIGIN, Filler, bypassing_triggers, rows
from tests.witness_support import Witness, post, witness_process


async def _submit(store: AuditStore, witness: Witness, note: str) -> list[tuple[str, dict[str, object]]]:
    """What the sink does with a new checkpoint: submit it to the witness; the AuditEvents it would publish."""
    announced: list[tuple[str, dict[str, object]]] = []

    async def announce(audit_type: str, _outcome: str, details: dict[str, object]) -> None:
        announced.append((audit_type, details))

    cp = Checkpoint.parse(SignedNote.parse(note).text)
    witnessing = Witnessing([WitnessEndpoint(url=witness.url, vkey=str(witness.key))], store, announce)
    await witnessing.start()
    witnessing.submit(SealedCheckpoint(cp.size, cp.root, note, datetime.now(UTC)))
    await witnessing.stop(grace_s=15)
    return announced


def _checkpoint_and_witness(filler: Filler, witness: Witness) -> list[tuple[str, dict[str, object]]]:
    filler.checkpoint()
    return asyncio.run(_submit(filler.store, witness, filler.store.checkpoint_notes()[-1]))


def _roll_back(owner: Engine, size: int) -> None:
    """A DBA's rollback: the newest rows (and their search facets), the checkpoints and the cosignatures that cover
    them, all gone. (With the triggers off, the trigger that deletes a row's facets with it is off too.)"""
    tables = ("audit_events", "audit_event_facets", "audit_checkpoints", "audit_cosignatures")
    with bypassing_triggers(owner, *tables), owner.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE leaf_idx >= :n"), {"n": size})
        conn.execute(text("DELETE FROM audit_event_facets WHERE seq NOT IN (SELECT seq FROM audit_events)"))
        conn.execute(text("DELETE FROM audit_checkpoints WHERE tree_size > :n"), {"n": size})
        conn.execute(text("DELETE FROM audit_cosignatures WHERE tree_size > :n"), {"n": size})


def _verify(owner: Engine, filler: Filler, outside: OutsideCheckpoints | None = None) -> list[str]:
    return list(verify_store(owner, filler.signer.verifier, strict=True, outside=outside).problems)


def test_a_rollback_is_named_with_a_witness_key_or_a_trusted_checkpoint(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    owner = make_engine(audit_db.owner)
    with witness_process(tmp_path / "witness", (ORIGIN, str(filler.signer.verifier))) as witness:
        filler.append(rows(0, 300))
        assert [t for t, _ in _checkpoint_and_witness(filler, witness)] == [COSIGNED_AUDIT_TYPE]
        filler.append(rows(300, 300))
        announced = _checkpoint_and_witness(filler, witness)
        assert [(t, d["tree_size"]) for t, d in announced] == [(COSIGNED_AUDIT_TYPE, 600)]
        assert filler.store.cosigned_sizes() == {witness.key.key_id.hex(): 600}
        # The cosigned note carries the log's signature and a valid cosignature/v1 by the witness.
        note = filler.store.cosigned_notes()[-1]
        verify_note(note, filler.signer.verifier)
        assert verify_cosignature(SignedNote.parse(note), witness.key).witness == witness.key.name
        trusted = tmp_path / "checkpoint-600.txt"  # kept by an auditor, e.g. from an earlier export
        trusted.write_text(note)

        _roll_back(owner, 300)

        # The finding: on its own, the rolled-back store verifies, strictly; so it does with the witness key
        # when the only cosignatures at hand are the store's own (the attacker deleted the newer ones).
        assert _verify(owner, filler) == []
        assert _verify(owner, filler, OutsideCheckpoints([witness.key])) == []

        # What the witness adds: it remembers 600. Its cosigned checkpoint names the rollback.
        latest = asyncio.run(fetch_latest(witness.url, ORIGIN))
        assert latest is not None
        problems = _verify(owner, filler, OutsideCheckpoints([witness.key], cosigned=[("witness", latest)]))
        assert len(problems) == 1, problems
        assert problems[0].startswith(
            f"rollback: store has 300 leaves; checkpoint cosigned by {witness.key.name} at 20"
        ), problems
        assert problems[0].endswith("commits to 600 > 300"), problems
        # ... and so does a trusted checkpoint file, without any witness key.
        problems = _verify(owner, filler, OutsideCheckpoints(trusted=[(str(trusted), trusted.read_text())]))
        assert problems == [
            f"rollback: store has 300 leaves; trusted checkpoint {trusted} (size 600) commits to 600 > 300"
        ]

        # The same through `atb audit verify`.
        base = [
            "audit",
            "verify",
            "--db",
            audit_db.owner,
            "--key",
            str(filler.signer.verifier),
            "--strict",
            "--no-kafka",
        ]
        result = CliRunner().invoke(app, base)
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(app, [*base, "--witness-key", str(witness.key), "--witness", witness.url])
        assert result.exit_code == 1, result.output
        assert "rollback: store has 300 leaves" in result.output, result.output
        result = CliRunner().invoke(app, [*base, "--trusted-checkpoint", str(trusted)])
        assert (result.exit_code, "commits to 600 > 300" in result.output) == (1, True), result.output

        # The sink, restarted on the rolled-back store, signs 300 + 50: the witness refuses (it holds 600).
        filler.frontier = type(filler.frontier).of(filler.store.leaf_hashes())
        filler.append(rows(600, 50))
        announced = _checkpoint_and_witness(filler, witness)
        assert [t for t, _ in announced] == [REFUSED_AUDIT_TYPE]
        assert "cosigned size 600 but the log has 350: the store was rolled back" in str(announced[0][1]["reason"])


def test_a_threshold_needs_that_many_distinct_witnesses(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    owner = make_engine(audit_db.owner)
    log_key = (ORIGIN, str(filler.signer.verifier))
    with (
        witness_process(tmp_path / "w1", log_key, name="w1.example/witness") as first,
        witness_process(tmp_path / "w2", log_key, name="w2.example/witness") as second,
    ):
        filler.append(rows(0, 120))
        filler.checkpoint()
        note = filler.store.checkpoint_notes()[-1]
        asyncio.run(_submit(filler.store, first, note))
        keys = [first.key, second.key]
        problems = _verify(owner, filler, OutsideCheckpoints(keys, threshold=2))
        assert len(problems) == 1, problems
        assert "no checkpoint cosigned by 2 of the 2" in problems[0], problems
        asyncio.run(_submit(filler.store, second, note))
        report = verify_store(owner, filler.signer.verifier, outside=OutsideCheckpoints(keys, threshold=2))
        assert report.ok, report.problems
        assert [a.source.split(" at ")[0] for a in report.anchors] == [
            "checkpoint cosigned by w1.example/witness, w2.example/witness"
        ]


def _note(signer_dir: Path, size: int, root: bytes, name: str = ORIGIN) -> str:
    signer = load_or_create_signer(signer_dir / "checkpoint.key", name)
    return signer.sign(Checkpoint(ORIGIN, size, root).body()).render()


def test_the_witness_refuses_a_rollback_a_fork_an_inconsistent_proof_and_a_bad_signature(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_key = load_or_create_signer(log_dir / "checkpoint.key", ORIGIN).verifier
    honest = MerkleTree([leaf_hash(b"leaf %d" % i) for i in range(40)])
    forked = MerkleTree([leaf_hash(b"leaf %d" % i if i != 5 else b"forged") for i in range(40)])
    with witness_process(tmp_path / "witness", (ORIGIN, str(log_key))) as witness:
        url = witness.url
        assert post(url, AddCheckpoint(0, (), _note(log_dir, 10, honest.root(10))))[0] == 200
        proof = tuple(honest.consistency_proof(10, 20))
        status, _, body = post(url, AddCheckpoint(10, proof, _note(log_dir, 20, honest.root(20))))
        assert status == 200
        assert body.startswith(f"\u2014 {witness.key.name} ")
        assert body.endswith("\n")

        # Rollback: a smaller checkpoint. From the recorded size: 400 (old > size); from an older size: 409 + 20.
        assert post(url, AddCheckpoint(20, (), _note(log_dir, 10, honest.root(10))))[0] == 400
        assert post(url, AddCheckpoint(10, (), _note(log_dir, 10, honest.root(10)))) == (409, SIZE_CONTENT_TYPE, "20\n")
        # Fork: the same size with another root.
        status, _, body = post(url, AddCheckpoint(20, (), _note(log_dir, 20, forked.root(20))))
        assert (status, "fork" in body) == (409, True), body
        # Inconsistent: a larger tree that does not extend the cosigned one (its own proof, or the honest one).
        for bad in (forked.consistency_proof(20, 30), honest.consistency_proof(20, 30)):
            request = AddCheckpoint(20, tuple(bad), _note(log_dir, 30, forked.root(30)))
            assert post(url, request)[0] == 422
        assert post(url, AddCheckpoint(20, (), _note(log_dir, 30, honest.root(30))))[0] == 422  # no proof at all
        # Not signed by the log's key (another key under the log's name), or an unknown log.
        assert post(url, AddCheckpoint(20, (), _note(tmp_path / "thief", 30, honest.root(30))))[0] == 403
        other = load_or_create_signer(tmp_path / "other" / "k", "other.example/log")
        alien = other.sign(Checkpoint("other.example/log", 1, honest.root(1)).body()).render()
        assert post(url, AddCheckpoint(0, (), alien))[0] == 404
        # Malformed.
        assert post(url, AddCheckpoint(0, (b"\x00" * 32,), _note(log_dir, 30, honest.root(30))))[0] == 409
        latest = asyncio.run(fetch_latest(url, ORIGIN))
        assert latest is not None
        assert Checkpoint.parse(SignedNote.parse(latest).text).size == 20

        # The honest log goes on: 20 -> 30 with a valid proof is cosigned.
        proof = tuple(honest.consistency_proof(20, 30))
        assert post(url, AddCheckpoint(20, proof, _note(log_dir, 30, honest.root(30))))[0] == 200

    # The record survives a restart (state file), and so does the key.
    with witness_process(tmp_path / "witness", (ORIGIN, str(log_key))) as again:
        assert again.key == witness.key
        assert post(again.url, AddCheckpoint(0, (), _note(log_dir, 30, honest.root(30))))[:2] == (
            409,
            SIZE_CONTENT_TYPE,
        )
        assert (tmp_path / "witness" / "witness.key").stat().st_mode & 0o777 == 0o600


def _rewrite_leaf(owner: Engine, seq: int) -> None:
    seq_row = next((s, r) for s, r in iter_rows(owner) if s == seq)
    changed = seq_row[1]._replace(producer="spiffe://atb.local/evil")
    with owner.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET producer = :p, leaf_hash = :h WHERE seq = :s"),
            {"p": changed.producer, "h": leaf_hash(leaf_bytes(changed)), "s": seq},
        )


def test_a_stolen_log_key_cannot_rewrite_history_past_a_witnessed_checkpoint(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    owner = make_engine(audit_db.owner)
    with witness_process(tmp_path / "witness", (ORIGIN, str(filler.signer.verifier))) as witness:
        filler.append(rows(0, 300))
        _checkpoint_and_witness(filler, witness)
        filler.append(rows(300, 300))
        _checkpoint_and_witness(filler, witness)

        # The thief has the log's key and the database: rewrite row 100, re-sign every checkpoint.
        with bypassing_triggers(owner, "audit_events", "audit_checkpoints", "audit_cosignatures"):
            _rewrite_leaf(owner, 100)
            with owner.begin() as conn:
                conn.execute(text("DELETE FROM audit_checkpoints"))
                conn.execute(text("DELETE FROM audit_cosignatures"))
        filler.frontier = type(filler.frontier).of(filler.store.leaf_hashes())
        filler.checkpoint()
        assert _verify(owner, filler) == []  # the log's key alone: a consistent, signed, rewritten history

        # The witness cosigns none of it: the same size with another root is a fork; a larger tree is inconsistent.
        refused = asyncio.run(_submit(filler.store, witness, filler.store.checkpoint_notes()[-1]))
        assert [t for t, _ in refused] == [REFUSED_AUDIT_TYPE]
        assert "fork" in str(refused[0][1]["reason"])
        filler.append(rows(600, 50))
        refused = _checkpoint_and_witness(filler, witness)
        assert [t for t, _ in refused] == [REFUSED_AUDIT_TYPE]
        assert "422" in str(refused[0][1]["reason"])

        latest = asyncio.run(fetch_latest(witness.url, ORIGIN))
        assert latest is not None
        problems = _verify(owner, filler, OutsideCheckpoints([witness.key], cosigned=[("witness", latest)]))
        assert len(problems) == 1, problems
        assert problems[0].startswith("history rewritten: the store's first 600 leaves"), problems
        assert f"checkpoint cosigned by {witness.key.name}" in problems[0]


def test_cosignature_format_matches_c2sp(tmp_path: Path) -> None:
    """The signature line is base64(key id || 8-byte big-endian time || 64-byte Ed25519) over cosignature/v1."""
    log_dir = tmp_path / "log"
    log_key = load_or_create_signer(log_dir / "checkpoint.key", ORIGIN).verifier
    root = MerkleTree([leaf_hash(b"x")]).root()
    with witness_process(tmp_path / "witness", (ORIGIN, str(log_key))) as witness:
        status, _, body = post(witness.url, AddCheckpoint(0, (), _note(log_dir, 1, root)))
    assert status == 200
    raw = base64.b64decode(body.split(" ")[2])
    assert len(raw) == 4 + 8 + 64
    assert raw[:4] == witness.key.key_id
    stamp = int.from_bytes(raw[4:12], "big")
    assert abs(stamp - datetime.now(UTC).timestamp()) < 60
    message = f"cosignature/v1\ntime {stamp}\n{Checkpoint(ORIGIN, 1, root).body()}".encode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(witness.key.public_key).verify(raw[12:], message)
    assert base64.b64decode(str(witness.key).split("+", 2)[2])[0] == 0x04  # vkey type: cosignature/v1


@pytest.fixture(autouse=True)
def _no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATB_AUDIT_DB_URL", raising=False)
