"""atb_identity.pki: the dev CA and SVIDs on disk — file modes, idempotence, renewal, refusals."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atb_identity import (
    ForeignTrustDomainError,
    InvalidSpiffeIdError,
    PkiError,
    SpiffeId,
    TrustBundle,
    bundle_path,
    ca_paths,
    ensure_svid,
    init_ca,
    issue_svid,
    load_svid,
    sign_envelope,
    svid_paths,
    validate_svid,
    verify_envelope,
)
from contracts import IssuanceRequested, LegitimateInterest, make_envelope

AGENT = "spiffe://atb.local/agent/crm-bot"
APPROVER = "spiffe://atb.local/user/alice"
SERVICE = "spiffe://atb.local/svc/issuer"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_init_ca_writes_the_bundle_and_a_private_ca(state: Path) -> None:
    bundle = init_ca(state)
    ca_cert, ca_key = ca_paths(state)
    assert bundle == bundle_path(state) == state / "pki" / "bundle.pem"
    assert ca_key.parent == state / "pki" / "ca"
    assert mode(state / "pki") == 0o700
    assert mode(ca_key.parent) == 0o700
    assert mode(ca_key) == 0o600
    assert bundle.read_bytes() == ca_cert.read_bytes()
    root = TrustBundle.load(bundle, "atb.local").roots[0]
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0


def test_init_ca_twice_keeps_the_same_ca(state: Path) -> None:
    init_ca(state)
    ca_cert, ca_key = ca_paths(state)
    first = ca_cert.read_bytes(), ca_key.read_bytes()
    init_ca(state, days=1)
    assert (ca_cert.read_bytes(), ca_key.read_bytes()) == first
    assert bundle_path(state).read_bytes() == first[0]


def test_init_ca_restores_a_deleted_bundle(state: Path) -> None:
    init_ca(state)
    bundle_path(state).unlink()
    init_ca(state)
    assert bundle_path(state).read_bytes() == ca_paths(state)[0].read_bytes()


def test_init_ca_refuses_to_reuse_a_ca_of_another_trust_domain(state: Path) -> None:
    init_ca(state, "atb.local")
    with pytest.raises(PkiError, match=r"is for atb\.local, not example\.org"):
        init_ca(state, "example.org")


def test_a_half_present_ca_is_refused(state: Path) -> None:
    init_ca(state)
    ca_paths(state)[1].unlink()
    with pytest.raises(PkiError, match="unreadable"):
        init_ca(state)


def test_a_ca_key_others_can_read_is_refused(state: Path) -> None:
    init_ca(state)
    ca_paths(state)[1].chmod(0o644)
    with pytest.raises(PkiError, match="chmod 600"):
        issue_svid(state, AGENT)


@pytest.mark.parametrize(
    ("trust_domain", "days", "error"), [("ATB.local", 10, InvalidSpiffeIdError), ("atb.local", 0, ValueError)]
)
def test_init_ca_refuses_bad_arguments(state: Path, trust_domain: str, days: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        init_ca(state, trust_domain, days=days)
    assert not ca_paths(state)[0].exists()


@pytest.mark.parametrize("spiffe_id", [AGENT, APPROVER, SERVICE])
def test_an_issued_svid_is_a_valid_x509_svid(state: Path, spiffe_id: str) -> None:
    svid = issue_svid(state, spiffe_id, hours=2)
    bundle = TrustBundle.load(bundle_path(state), "atb.local")
    now = datetime.now(UTC)
    assert validate_svid(svid.chain, bundle, at=now) == SpiffeId.parse(spiffe_id)
    assert (svid.cert_path, svid.key_path) == svid_paths(state, spiffe_id)
    leaf = svid.leaf
    assert leaf.not_valid_before_utc <= now - timedelta(minutes=4)
    assert timedelta(hours=1, minutes=59) < leaf.not_valid_after_utc - now <= timedelta(hours=2)
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SPIFFE"
    assert svid.chain[1] == bundle.roots[0]


def test_the_leaf_extensions_follow_x509_svid(state: Path) -> None:
    leaf = issue_svid(state, AGENT).leaf
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert constraints.critical
    assert not constraints.value.ca
    assert usage.critical
    assert usage.value.digital_signature
    assert not any(
        getattr(usage.value, name)
        for name in ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    )
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [AGENT]


def test_svid_files_are_private_and_load_back(state: Path) -> None:
    svid = issue_svid(state, AGENT)
    chain_path, key_path = svid_paths(state, AGENT)
    assert mode(key_path) == 0o600
    assert mode(chain_path.parent) == 0o700
    assert mode(state / "pki" / "svids") == 0o700
    loaded = load_svid(chain_path, key_path)
    assert loaded.chain == svid.chain
    assert loaded.thumbprint() == svid.thumbprint()


def test_svid_folders_do_not_collide() -> None:
    ids = [
        "spiffe://atb.local/agent/a/b",
        "spiffe://atb.local/agent/a_b",
        "spiffe://atb.local/agent/a.b",
        "spiffe://atb.local/agent/a-b",
        "spiffe://atb.locala/gent/a/b",
        "spiffe://atb.local/agent/" + "x" * 300,
        "spiffe://atb.local/agent/" + "x" * 301,
    ]
    folders = {svid_paths(Path("/s"), spiffe_id)[0].parent for spiffe_id in ids}
    assert len(folders) == len(ids)
    assert all(len(folder.name) <= 140 for folder in folders)


def test_an_issued_svid_signs_events_that_verify(state: Path) -> None:
    svid = issue_svid(state, AGENT)
    payload = IssuanceRequested(
        request_id="req-1",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.update",
        resource="crm:contact/42",
        leg=LegitimateInterest.model_validate(
            {"basis": "LI", "ref": "LI-1", "jurisdiction": "US", "accountable_party": {"type": "e", "id": "emp-1"}}
        ),
        requested_at=datetime.now(UTC),
        agent_cert_thumbprint=svid.thumbprint(),
    )
    envelope = sign_envelope(make_envelope(payload, source=AGENT), svid)
    bundle = TrustBundle.load(bundle_path(state), "atb.local")
    assert verify_envelope(envelope, bundle, at=datetime.now(UTC)) == SpiffeId.parse(AGENT)


@pytest.mark.parametrize(
    "spiffe_id", ["spiffe://evil.example/agent/crm-bot", "spiffe://atb.example/agent/crm-bot", "spiffe://atb.locall/x"]
)
def test_an_id_of_another_trust_domain_is_refused(state: Path, spiffe_id: str) -> None:
    init_ca(state)
    with pytest.raises(ForeignTrustDomainError):
        issue_svid(state, spiffe_id)
    with pytest.raises(ForeignTrustDomainError):
        ensure_svid(state, spiffe_id)
    assert not svid_paths(state, spiffe_id)[0].exists()


def test_a_foreign_id_creates_no_ca(state: Path) -> None:
    with pytest.raises(ForeignTrustDomainError):
        issue_svid(state, "spiffe://evil.example/agent/x")
    assert not ca_paths(state)[0].exists()


def test_the_trust_domain_argument_selects_the_ca(state: Path) -> None:
    svid = issue_svid(state, "spiffe://example.org/svc/x", trust_domain="example.org")
    assert TrustBundle.load(bundle_path(state), "example.org").roots[0] == svid.chain[1]
    with pytest.raises(ForeignTrustDomainError):
        issue_svid(state, AGENT)  # the CA now is example.org's


@pytest.mark.parametrize("spiffe_id", ["https://atb.local/agent/x", "spiffe://atb.local", "spiffe://atb.local/a/../b"])
def test_a_malformed_id_is_refused(state: Path, spiffe_id: str) -> None:
    with pytest.raises(InvalidSpiffeIdError):
        issue_svid(state, spiffe_id)


@pytest.mark.parametrize("hours", [0, -1])
def test_a_non_positive_lifetime_is_refused(state: Path, hours: float) -> None:
    with pytest.raises(ValueError, match="hours must be positive"):
        issue_svid(state, AGENT, hours=hours)


def test_ensure_svid_creates_the_ca_and_reuses_the_svid(state: Path) -> None:
    first = ensure_svid(state, AGENT)
    assert bundle_path(state).exists()
    again = ensure_svid(state, AGENT)
    assert again.leaf == first.leaf
    assert again.key_path == first.key_path


def test_ensure_svid_renews_one_that_expires_soon(state: Path) -> None:
    short = issue_svid(state, AGENT, hours=0.5)
    renewed = ensure_svid(state, AGENT, min_remaining_hours=1.0)
    assert renewed.leaf.serial_number != short.leaf.serial_number
    assert renewed.leaf.not_valid_after_utc - datetime.now(UTC) > timedelta(hours=24)
    assert load_svid(*svid_paths(state, AGENT)).leaf == renewed.leaf


def test_ensure_svid_keeps_one_with_enough_time_left(state: Path) -> None:
    issued = issue_svid(state, AGENT, hours=3)
    assert ensure_svid(state, AGENT, min_remaining_hours=1.0).leaf == issued.leaf


def test_ensure_svid_replaces_a_corrupt_or_foreign_svid(state: Path) -> None:
    first = ensure_svid(state, AGENT)
    chain_path, key_path = svid_paths(state, AGENT)
    key_path.write_bytes(b"garbage")
    repaired = ensure_svid(state, AGENT)
    assert repaired.leaf != first.leaf
    # An SVID from a CA that is no longer the bundle's is not reused either.
    other_state = state.parent / "other"
    foreign = issue_svid(other_state, AGENT)
    chain_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in foreign.chain))
    key_path.write_bytes(foreign.key_path.read_bytes() if foreign.key_path else b"")
    replaced = ensure_svid(state, AGENT)
    assert replaced.chain[1] == TrustBundle.load(bundle_path(state), "atb.local").roots[0]


def test_concurrent_callers_share_one_ca(state: Path) -> None:
    # The lock file serialises creators: without it each thread would try to create its own CA.
    ids = [f"spiffe://atb.local/agent/bot-{n}" for n in range(8)]
    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        svids = list(pool.map(lambda spiffe_id: ensure_svid(state, spiffe_id), ids))
    bundle = TrustBundle.load(bundle_path(state), "atb.local")
    assert len(bundle.roots) == 1
    assert {svid.chain[1] for svid in svids} == {bundle.roots[0]}
    now = datetime.now(UTC)
    assert [str(validate_svid(svid.chain, bundle, at=now)) for svid in svids] == ids


def test_ensure_svid_refuses_a_margin_longer_than_the_lifetime(state: Path) -> None:
    with pytest.raises(ValueError, match="min_remaining_hours"):
        ensure_svid(state, AGENT, min_remaining_hours=800)


def test_a_loose_folder_is_tightened(state: Path) -> None:
    (state / "pki").mkdir(parents=True, mode=0o755)
    (state / "pki").chmod(0o755)
    init_ca(state)
    assert mode(state / "pki") == 0o700
