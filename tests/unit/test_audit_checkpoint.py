"""C2SP tlog-checkpoint / signed-note text and Ed25519 signatures over it."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from audit_sink.adapters.signing import load_or_create_signer, load_verifier, verify_note
from audit_sink.domain.checkpoint import Checkpoint, NoteError, PurgeRecord, SignedNote, VerifierKey, key_id

ROOT = hashlib.sha256(b"root").digest()


def test_checkpoint_body_is_origin_size_root() -> None:
    cp = Checkpoint("atb.local/audit", 1234, ROOT)
    assert cp.body() == f"atb.local/audit\n1234\n{base64.b64encode(ROOT).decode()}\n"
    assert Checkpoint.parse(cp.body()) == cp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "origin\n12\n",
        "origin\nx\nAAAA\n",
        "origin\n012\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n1\nnot base64!\n",
        "origin\n1\n" + base64.b64encode(b"short").decode() + "\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode(),
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_key_id_follows_c2sp_signed_note() -> None:
    pub = bytes(range(32))
    assert key_id("example", pub) == hashlib.sha256(b"example\n\x01" + pub).digest()[:4]


def test_sign_and_verify_a_note(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "cp.key", "atb.local/audit")
    assert (tmp_path / "cp.key").stat().st_mode & 0o777 == 0o600
    note = signer.sign(Checkpoint("atb.local/audit", 3, ROOT).body()).render()
    assert "\n\n\u2014 atb.local/audit " in note
    key = load_verifier(str(tmp_path / "cp.key.pub"))
    assert key == signer.verifier == VerifierKey.parse(str(signer.verifier))
    assert Checkpoint.parse(verify_note(note, key).text).size == 3
    # The same key is loaded again, not replaced.
    assert load_or_create_signer(tmp_path / "cp.key", "atb.local/audit").verifier == key


def test_altered_or_foreign_notes_fail(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "a.key", "atb.local/audit")
    other = load_or_create_signer(tmp_path / "b.key", "atb.local/audit")
    note = signer.sign(Checkpoint("atb.local/audit", 3, ROOT).body()).render()
    with pytest.raises(NoteError):
        verify_note(note.replace("\n3\n", "\n4\n"), signer.verifier)
    with pytest.raises(NoteError):
        verify_note(note, other.verifier)
    with pytest.raises(NoteError):
        verify_note(note.split("\n\n")[0] + "\n", signer.verifier)
    sig = SignedNote.parse(note).signatures[0]
    flipped = bytes([sig.signature[0] ^ 1]) + sig.signature[1:]
    forged = SignedNote(SignedNote.parse(note).text, (type(sig)(sig.name, sig.key_id, flipped),)).render()
    with pytest.raises(NoteError, match="bad signature"):
        verify_note(forged, signer.verifier)


@pytest.mark.parametrize("text", ["x", "a+b", "a+00000000+AAAA", "a b+00+AA"])
def test_bad_verifier_keys(text: str) -> None:
    with pytest.raises(NoteError):
        VerifierKey.parse(text)


def test_purge_record_round_trip() -> None:
    record = PurgeRecord(
        "o", "purge-1", "2030-01-01T00:00:00+00:00", 10, ROOT, 2, PurgeRecord.digest_of([(3, ROOT), (1, ROOT)])
    )
    assert PurgeRecord.parse(record.body()) == record
    assert PurgeRecord.digest_of([(1, ROOT), (3, ROOT)]) == record.digest


def test_verifier_key_whose_base64_contains_plus_round_trips() -> None:
    key = VerifierKey("atb.local/audit", bytes([0xFB]) * 32)
    assert "+" in str(key).split("+", 2)[2]
    assert VerifierKey.parse(str(key)) == key
