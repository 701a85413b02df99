"""Renewed SVID and bundle files are taken in place; what does not load is refused and the last good one kept.

SPIRE renews an X.509-SVID at half its lifetime and spiffe-helper rewrites `svid.pem`, then
`svid_key.pem`; the trust domain's CA rotates by a new `bundle.pem`. `atb_runtime.identity.IdentityFiles`
re-reads a file that changed: the `Svid` and `TrustBundle` objects every component holds are renewed in
place, and a chain validated against a bundle before its renewal is validated again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from atb_identity import (
    BadCertificateSignatureError,
    Svid,
    TrustBundle,
    TrustBundleError,
    load_svid,
    sign_envelope,
    verify_envelope,
)
from atb_runtime.identity import IDENTITY_RENEWALS, IdentityFiles
from tests.spire_support import HelperFiles, SpireCa, write_helper_files
from tests.unit.test_identity_algorithms import event

SERVICE = "spiffe://atb.local/svc/approvals"
PEM = serialization.Encoding.PEM


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _write_cert(files: HelperFiles, svid: Svid) -> None:
    _replace(files.svid, b"".join(c.public_bytes(PEM) for c in svid.chain))


def _write_key(files: HelperFiles, svid: Svid) -> None:
    _replace(files.key, svid.key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _renewed(what: str, outcome: str) -> float:
    return float(IDENTITY_RENEWALS.labels(what, outcome)._value.get())


@dataclass(frozen=True)
class Held:
    ca: SpireCa
    files: HelperFiles
    svid: Svid
    bundle: TrustBundle
    watched: IdentityFiles


@pytest.fixture
def held(tmp_path: Path) -> Held:
    ca = SpireCa.create()
    files = write_helper_files(ca.issue(SERVICE), ca.roots, tmp_path / "svid")
    svid = load_svid(files.svid, files.key)
    bundle = TrustBundle.load(files.bundle, "atb.local")
    watched = IdentityFiles()
    watched.add_svid(svid)
    watched.add_bundle(bundle, files.bundle)
    return Held(ca, files, svid, bundle, watched)


def test_a_renewed_svid_is_taken_in_place_and_signs_from_then_on(held: Held) -> None:
    ca, files, svid, bundle, watched = held.ca, held.files, held.svid, held.bundle, held.watched
    assert watched.check() == []  # nothing changed
    old_leaf = svid.leaf
    new = ca.issue(SERVICE)
    before = _renewed("svid", "refused")
    _write_cert(files, new)
    # The certificate is new, the key still the old one: refused, the old SVID still signs.
    assert watched.check() == []
    assert _renewed("svid", "refused") == before + 1
    assert svid.leaf == old_leaf
    _write_key(files, new)
    (line,) = watched.check()
    assert SERVICE in line
    assert svid.leaf == new.chain[0]
    assert svid.key.public_key() == new.key.public_key()
    signed = sign_envelope(event(SERVICE), svid)
    assert signed.proof is not None
    assert verify_envelope(signed, bundle, at=datetime.now(UTC)) == svid.spiffe_id
    assert signed.proof.x5c == new.x5c()


def test_files_of_another_identity_or_an_expired_leaf_are_refused(held: Held) -> None:
    ca, files, svid, watched = held.ca, held.files, held.svid, held.watched
    old_leaf = svid.leaf
    other = ca.issue("spiffe://atb.local/svc/issuer")
    _write_cert(files, other)
    _write_key(files, other)
    assert watched.check() == []
    assert svid.leaf == old_leaf
    assert str(svid.spiffe_id) == SERVICE
    expired = ca.issue(SERVICE, now=datetime.now(UTC) - timedelta(hours=3))
    _write_cert(files, expired)
    _write_key(files, expired)
    assert watched.check() == []
    assert svid.leaf == old_leaf


def test_a_renewed_bundle_drops_a_root_and_what_was_validated_under_it(held: Held) -> None:
    files, svid, bundle, watched = held.files, held.svid, held.bundle, held.watched
    signed = sign_envelope(event(SERVICE), svid)
    now = datetime.now(UTC)
    assert verify_envelope(signed, bundle, at=now) == svid.spiffe_id  # validated, and remembered
    successor = SpireCa.create()
    _replace(files.bundle, b"".join(c.public_bytes(PEM) for c in successor.roots))
    (line,) = watched.check()
    assert "bundle" in line
    assert bundle.roots == successor.roots
    assert bundle.generation == 1
    # The chain validated before the renewal no longer chains to a trusted root.
    with pytest.raises(BadCertificateSignatureError, match="any bundle root"):
        verify_envelope(signed, bundle, at=now)


def test_a_bundle_of_another_trust_domain_is_refused(held: Held) -> None:
    files, bundle, watched = held.files, held.bundle, held.watched
    roots = bundle.roots
    _replace(files.bundle, b"not a certificate")
    assert watched.check() == []
    assert bundle.roots == roots
    with pytest.raises(TrustBundleError, match="cannot renew"):
        bundle.renew(SpireCa.create("other.example").bundle)
