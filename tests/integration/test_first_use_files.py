"""Keys and secrets made on first use, by replicas that start at the same moment.

Two audit sinks started together once both found no checkpoint key: one created
it, the other failed to start with FileExistsError (or could read it half
written). Every first-use file now goes through `atb_runtime.files.create_once`.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atb.policy.keys import ensure_dev_key
from atb.witness.adapters.keys import load_or_create_cosigner
from atb_runtime.files import create_once, write_atomically
from audit_sink.adapters.signing import load_or_create_signer
from chat.adapters.secret import ensure_signing_secret
from issuer.adapters.keyring import SigningKeyRing
from issuer.adapters.keys import load_or_create_key

RACERS = 6


def test_a_file_another_process_creates_first_is_read_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.pem"

    def the_other_process_wins_meanwhile() -> bytes:
        path.write_bytes(b"theirs")  # it linked its file while we were still generating ours
        return b"ours"

    assert create_once(path, the_other_process_wins_meanwhile) == b"theirs"
    assert path.read_bytes() == b"theirs"
    assert [p.name for p in path.parent.iterdir()] == ["k.pem"]  # our temporary file is gone


def test_a_created_file_is_private_and_whole(tmp_path: Path) -> None:
    path = tmp_path / "d" / "secret"
    assert create_once(path, lambda: b"x" * 4096) == b"x" * 4096
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert create_once(path, lambda: pytest.fail("an existing file is never made again")) == b"x" * 4096


def test_an_empty_file_is_named_not_used(tmp_path: Path) -> None:
    """An empty key (a writer that did not publish whole files, a lost write) is an error naming the file."""
    path = tmp_path / "checkpoint.key"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint\.key is empty: remove it"):
        load_or_create_signer(path, "audit.example/log")
    assert path.read_bytes() == b""  # nothing is made up in its place


def test_a_keyring_index_naming_a_missing_key_fails_without_making_one(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    kid = SigningKeyRing.ensure(keys).entries()[0].key.kid
    (keys / f"{kid}.pem").unlink()
    with pytest.raises(FileNotFoundError):
        SigningKeyRing(keys).entries()
    assert not (keys / f"{kid}.pem").exists()


def test_an_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "k.pub"
    path.write_text("old\n")
    write_atomically(path, b"new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["k.pub"]


def _audit_key(path: Path) -> str:
    return str(load_or_create_signer(path, "audit.example/log").verifier)


def _witness_key(path: Path) -> str:
    return str(load_or_create_cosigner(path, "witness.example").key)


def _issuer_key(path: Path) -> str:
    return load_or_create_key(path).kid


def _slack_secret(path: Path) -> str:
    return ensure_signing_secret(path).decode()


def _policy_key(path: Path) -> str:
    return ensure_dev_key(path).read_text()


def _issuer_keyring(path: Path) -> str:
    """Replicas opening the keyring at once: one first key, one index (it held a rename and a shared temp file)."""
    ring = SigningKeyRing.ensure(path.parent / "keys")
    return ",".join(entry.key.kid for entry in ring.entries())


def _race(load: Callable[[Path], str], path: Path, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        results.put(("ok", load(path)))  # type: ignore[attr-defined]
    except BaseException as exc:  # reported to the test, which names it
        results.put(("error", f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]


def _all_at_once(load: Callable[[Path], str], path: Path) -> list[tuple[str, str]]:
    """`load(path)` in RACERS processes released together by a barrier: ("ok", result) or ("error", what), each."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(RACERS), context.Queue()
    racers = [context.Process(target=_race, args=(load, path, barrier, results)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    outcomes: list[tuple[str, str]] = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    return outcomes


@pytest.mark.parametrize("load", [_audit_key, _witness_key, _issuer_key, _issuer_keyring, _slack_secret, _policy_key])
def test_replicas_starting_together_all_start_with_one_key(tmp_path: Path, load: Callable[[Path], str]) -> None:
    path = tmp_path / "state" / "key"
    outcomes = _all_at_once(load, path)
    errors = [detail for kind, detail in outcomes if kind == "error"]
    assert errors == []
    assert len({detail for _, detail in outcomes}) == 1, "every replica must use the same key"
    assert not [p for p in path.parent.rglob(".*") if p.name != ".lock"], "no temporary file is left behind"
    if path.exists():
        assert os.stat(path).st_mode & 0o077 == 0


def _rotate(path: Path) -> str:
    SigningKeyRing(path).rotate(datetime.now(UTC))
    return "rotated"


def test_rotations_at_once_each_add_their_key(tmp_path: Path) -> None:
    """Two `atb keys rotate` at once: both keys are in the index, none is lost to the other's write."""
    keys = tmp_path / "keys"
    first = SigningKeyRing.ensure(keys).entries()[0].key.kid
    outcomes = _all_at_once(_rotate, keys)
    assert [kind for kind, _ in outcomes] == ["ok"] * RACERS, outcomes
    kids = [entry.key.kid for entry in SigningKeyRing(keys).entries()]
    assert kids[0] == first
    assert len(set(kids)) == RACERS + 1
