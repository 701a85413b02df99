"""Key rotation on disk: publish first, sign later, retire after every token expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.adapters.keys import KeyRing as VerifierKeys
from contracts import MAX_LIFETIME_SECONDS
from issuer.adapters.keyring import RETIRE_LEEWAY, SigningKeyRing, open_keys
from issuer.adapters.keys import load_or_create_key

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_first_key_is_active_at_once_and_kept_0600(tmp_path: Path) -> None:
    ring = SigningKeyRing.ensure(tmp_path / "keys", now=T0)
    key = ring.current(T0)
    assert (tmp_path / "keys" / f"{key.kid}.pem").stat().st_mode & 0o777 == 0o600
    assert [e.key.kid for e in ring.published(T0)] == [key.kid]
    assert SigningKeyRing.ensure(tmp_path / "keys", now=T0).current(T0).kid == key.kid  # idempotent


def test_rotation_publishes_before_signing_and_retires_after_the_last_token(tmp_path: Path) -> None:
    ring = SigningKeyRing.ensure(tmp_path / "keys", now=T0)
    old = ring.current(T0)
    entry = ring.rotate(T0, activation_delay=timedelta(seconds=10))
    new = entry.key
    assert new.kid != old.kid
    # Both are published at once; the new one does not sign before it activates.
    assert {e.key.kid for e in ring.published(T0)} == {old.kid, new.kid}
    assert ring.current(T0 + timedelta(seconds=9)).kid == old.kid
    assert ring.current(T0 + timedelta(seconds=10)).kid == new.kid
    # The old key stays published until a token it signed at its last moment has expired.
    retire = T0 + timedelta(seconds=10 + MAX_LIFETIME_SECONDS) + RETIRE_LEEWAY
    old_entry = next(e for e in ring.entries() if e.key.kid == old.kid)
    assert old_entry.retire_after == retire
    assert {e.key.kid for e in ring.published(retire - timedelta(seconds=1))} == {old.kid, new.kid}
    assert {e.key.kid for e in ring.published(retire + timedelta(seconds=1))} == {new.kid}


def test_another_process_sees_a_rotation_without_restart(tmp_path: Path) -> None:
    issuer_view = SigningKeyRing.ensure(tmp_path / "keys", now=T0)
    before = issuer_view.current(T0).kid
    SigningKeyRing(tmp_path / "keys").rotate(T0, activation_delay=timedelta(seconds=0))
    assert issuer_view.current(T0 + timedelta(seconds=1)).kid != before


def test_a_verifier_refuses_a_retired_key(tmp_path: Path) -> None:
    ring = SigningKeyRing.ensure(tmp_path / "keys", now=T0)
    old = ring.current(T0)
    ring.rotate(T0)
    entry = next(e for e in ring.entries() if e.key.kid == old.kid)
    assert entry.retire_after is not None
    keys = VerifierKeys("127.0.0.1:1", "")
    keys.add(old.kid, old.jwk, entry.retire_after)
    assert keys.get(old.kid, entry.retire_after - timedelta(seconds=1)) is not None
    assert keys.get(old.kid, entry.retire_after + timedelta(seconds=1)) is None


def test_a_mounted_key_that_is_missing_stops_the_issuer_instead_of_being_made_up(tmp_path: Path) -> None:
    """ATB_SIGNING_KEY_PATH names a secret mounted in production: if it is not there, nothing signs."""
    missing = tmp_path / "secrets" / "signing.pem"
    with pytest.raises(FileNotFoundError, match="mount the issuer's signing key there"):
        open_keys(missing, tmp_path / "keys")
    assert not missing.exists()
    mounted = load_or_create_key(tmp_path / "mounted.pem")
    assert open_keys(tmp_path / "mounted.pem", tmp_path / "keys").current(datetime.now(UTC)).kid == mounted.kid
