"""atb_identity.svid: X.509-SVID validation, one crafted certificate per broken rule (real crypto).

Each bad case changes exactly one thing from a valid SVID and expects the one named
error (exact class and stable code) for the rule it breaks.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ObjectIdentifier

from atb_identity import (
    BadCertificateSignatureError,
    ChainTooLongError,
    CredentialError,
    EmptyChainError,
    EmptySpiffePathError,
    ForeignTrustDomainError,
    IdentityError,
    IntermediateExpiredError,
    IntermediateKeyUsageError,
    IntermediateNotCaError,
    IntermediateNotYetValidError,
    InvalidSpiffeIdError,
    IssuerMismatchError,
    LeafCrlSignError,
    LeafExpiredError,
    LeafIsCaError,
    LeafKeyCertSignError,
    LeafNotYetValidError,
    MissingDigitalSignatureError,
    MultipleUriSansError,
    NotSpiffeSchemeError,
    NoUriSanError,
    PathLengthExceededError,
    RootExpiredError,
    RootNotYetValidError,
    SpiffeId,
    SpiffeIdTooLongError,
    Svid,
    TrustBundle,
    TrustBundleError,
    UnhandledCriticalExtensionError,
    UntrustedIssuerError,
    cert_thumbprint,
    load_svid,
    validate_svid,
)
from tests.unit.test_identity_support import (
    AGENT_ID,
    AT,
    DAY,
    TD,
    World,
    make_ca,
    make_leaf,
    make_svid,
    world,
)


@pytest.fixture(scope="session")
def w() -> World:
    return world()


@dataclass(frozen=True)
class Case:
    chain: Sequence[x509.Certificate]
    bundle: TrustBundle | None = None  # None: the world's bundle


Build = Callable[[World], Case]


def leaf(**changes: object) -> Build:
    """A chain of one leaf issued by the root, with one factory argument changed."""
    return lambda w: Case([make_leaf(w.root, **changes)])  # type: ignore[arg-type]


def via_intermediate(**changes: object) -> Build:
    """leaf → an intermediate under the root, built with one argument changed."""

    def build(w: World) -> Case:
        intermediate = make_ca("Crafted intermediate", issuer=w.root, **changes)  # type: ignore[arg-type]
        return Case([make_leaf(intermediate), intermediate.cert])

    return build


def under_root(**root_changes: object) -> Build:
    """A leaf under a trusted root built with one argument changed (its own bundle)."""

    def build(w: World) -> Case:
        root = make_ca("Crafted root", **root_changes)  # type: ignore[arg-type]
        return Case([make_leaf(root)], TrustBundle(TD, (root.cert,)))

    return build


def _forged_leaf(w: World) -> Case:
    return Case([make_leaf(w.root, signing_key=Ed25519PrivateKey.generate())])


def _forged_leaf_under_intermediate(w: World) -> Case:
    return Case([make_leaf(w.intermediate, signing_key=Ed25519PrivateKey.generate()), w.intermediate.cert])


def _forged_intermediate(w: World) -> Case:
    forged = make_ca("ATB test intermediate", issuer=w.root, signing_key=Ed25519PrivateKey.generate())
    return Case([make_leaf(forged), forged.cert])


def _wrong_order(w: World) -> Case:
    # The leaf is issued by the root, but the chain claims the intermediate issued it.
    return Case([make_leaf(w.root), w.intermediate.cert])


def _untrusted(w: World) -> Case:
    return Case([make_leaf(w.stranger)])


def _untrusted_with_its_root(w: World) -> Case:
    # Presenting the stranger's root in the chain does not make it trusted.
    return Case([make_leaf(w.stranger), w.stranger.cert])


def _too_long(w: World) -> Case:
    cas = [w.root]
    for depth in range(5):
        cas.append(make_ca(f"Deep intermediate {depth}", issuer=cas[-1]))
    return Case([make_leaf(cas[-1]), *(ca.cert for ca in reversed(cas[1:]))])


def _path_length(w: World) -> Case:
    root = make_ca("Leaves-only root", path_length=0)
    intermediate = make_ca("Intermediate under a leaves-only root", issuer=root)
    return Case([make_leaf(intermediate), intermediate.cert], TrustBundle(TD, (root.cert,)))


def _intermediate_path_length(w: World) -> Case:
    upper = make_ca("Upper intermediate", issuer=w.root, path_length=0)
    lower = make_ca("Lower intermediate", issuer=upper)
    return Case([make_leaf(lower), lower.cert, upper.cert])


_CRITICAL_UNKNOWN = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
_BAD_SYNTAX = [
    ("query", "spiffe://atb.local/agent/crm-bot?x=1"),
    ("fragment", "spiffe://atb.local/agent/crm-bot#top"),
    ("port", "spiffe://atb.local:8443/agent/crm-bot"),
    ("userinfo", "spiffe://bob@atb.local/agent/crm-bot"),
    ("trust_domain_chars", "spiffe://ATB.local/agent/crm-bot"),
    ("dot_segment", "spiffe://atb.local/agent/../crm-bot"),
    ("dot_segment", "spiffe://atb.local/agent/./crm-bot"),
    ("empty_segment", "spiffe://atb.local/agent//crm-bot"),
    ("empty_segment", "spiffe://atb.local/agent/crm-bot/"),
    ("segment_chars", "spiffe://atb.local/agent/crm%20bot"),
    ("missing_trust_domain", "spiffe:///agent/crm-bot"),
]

BAD: list[tuple[str, Build, type[IdentityError], str]] = [
    # URI SAN (X509-SVID.md §2)
    ("no-uri-san", leaf(uris=()), NoUriSanError, "no_uri_san"),
    ("two-uri-sans", leaf(uris=(AGENT_ID, "spiffe://atb.local/agent/b")), MultipleUriSansError, "multiple_uri_sans"),
    ("https-san", leaf(uris=("https://atb.local/agent/crm-bot",)), NotSpiffeSchemeError, "not_spiffe_scheme"),
    ("uppercase-scheme", leaf(uris=("SPIFFE://atb.local/agent/x",)), NotSpiffeSchemeError, "not_spiffe_scheme"),
    (
        "foreign-td",
        leaf(uris=("spiffe://evil.example/agent/crm-bot",)),
        ForeignTrustDomainError,
        "foreign_trust_domain",
    ),
    ("root-path", leaf(uris=("spiffe://atb.local",)), EmptySpiffePathError, "empty_path"),
    ("root-path-slash", leaf(uris=("spiffe://atb.local/",)), EmptySpiffePathError, "empty_path"),
    (
        "oversize-id",
        leaf(uris=("spiffe://atb.local/agent/" + "a" * 2048,)),
        SpiffeIdTooLongError,
        "spiffe_id_too_long",
    ),
    *(
        (f"syntax-{code}-{n}", leaf(uris=(uri,)), InvalidSpiffeIdError, code)
        for n, (code, uri) in enumerate(_BAD_SYNTAX)
    ),
    # the leaf's constraints (X509-SVID.md §4)
    ("leaf-is-ca", leaf(is_ca=True), LeafIsCaError, "leaf_is_ca"),
    (
        "leaf-key-cert-sign",
        leaf(key_usage={"digital_signature": True, "key_cert_sign": True}),
        LeafKeyCertSignError,
        "leaf_key_cert_sign",
    ),
    ("leaf-crl-sign", leaf(key_usage={"digital_signature": True, "crl_sign": True}), LeafCrlSignError, "leaf_crl_sign"),
    (
        "no-digital-signature",
        leaf(key_usage={"content_commitment": True}),
        MissingDigitalSignatureError,
        "missing_digital_signature",
    ),
    ("no-key-usage", leaf(key_usage=None), MissingDigitalSignatureError, "missing_digital_signature"),
    (
        "critical-unknown-extension",
        leaf(extra_extensions=((_CRITICAL_UNKNOWN, True),)),
        UnhandledCriticalExtensionError,
        "unhandled_critical_extension",
    ),
    # validity (RFC 5280 §4.1.2.5)
    ("leaf-expired", leaf(not_before=AT - 2 * DAY, not_after=AT - DAY), LeafExpiredError, "leaf_expired"),
    (
        "leaf-not-yet-valid",
        leaf(not_before=AT + DAY, not_after=AT + 2 * DAY),
        LeafNotYetValidError,
        "leaf_not_yet_valid",
    ),
    (
        "intermediate-expired",
        via_intermediate(not_before=AT - 9 * DAY, not_after=AT - DAY),
        IntermediateExpiredError,
        "intermediate_expired",
    ),
    (
        "intermediate-not-yet-valid",
        via_intermediate(not_before=AT + DAY, not_after=AT + 9 * DAY),
        IntermediateNotYetValidError,
        "intermediate_not_yet_valid",
    ),
    ("root-expired", under_root(not_before=AT - 9 * DAY, not_after=AT - DAY), RootExpiredError, "root_expired"),
    (
        "root-not-yet-valid",
        under_root(not_before=AT + DAY, not_after=AT + 9 * DAY),
        RootNotYetValidError,
        "root_not_yet_valid",
    ),
    # the path to a root (RFC 5280 §6.1)
    ("empty-chain", lambda w: Case([]), EmptyChainError, "empty_chain"),
    ("chain-too-long", _too_long, ChainTooLongError, "chain_too_long"),
    ("intermediate-not-ca", via_intermediate(is_ca=False), IntermediateNotCaError, "intermediate_not_ca"),
    (
        "intermediate-no-basic-constraints",
        via_intermediate(basic_constraints=False),
        IntermediateNotCaError,
        "intermediate_not_ca",
    ),
    (
        "intermediate-no-key-cert-sign",
        via_intermediate(key_usage={"crl_sign": True}),
        IntermediateKeyUsageError,
        "intermediate_no_key_cert_sign",
    ),
    (
        "intermediate-no-key-usage",
        via_intermediate(key_usage=None),
        IntermediateKeyUsageError,
        "intermediate_no_key_cert_sign",
    ),
    ("root-path-length", _path_length, PathLengthExceededError, "path_length_exceeded"),
    ("intermediate-path-length", _intermediate_path_length, PathLengthExceededError, "path_length_exceeded"),
    ("untrusted-issuer", _untrusted, UntrustedIssuerError, "untrusted_issuer"),
    ("untrusted-issuer-root-presented", _untrusted_with_its_root, UntrustedIssuerError, "untrusted_issuer"),
    ("wrong-order", _wrong_order, IssuerMismatchError, "issuer_mismatch"),
    ("forged-leaf", _forged_leaf, BadCertificateSignatureError, "bad_certificate_signature"),
    (
        "forged-leaf-under-intermediate",
        _forged_leaf_under_intermediate,
        BadCertificateSignatureError,
        "bad_certificate_signature",
    ),
    ("forged-intermediate", _forged_intermediate, BadCertificateSignatureError, "bad_certificate_signature"),
]


@pytest.mark.parametrize(("build", "error", "code"), [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_a_chain_breaking_one_rule_is_refused_with_that_rule(
    w: World, build: Build, error: type[IdentityError], code: str
) -> None:
    case = build(w)
    with pytest.raises(error) as caught:
        validate_svid(case.chain, case.bundle or w.bundle, at=AT)
    assert type(caught.value) is error
    assert caught.value.code == code
    assert str(caught.value).startswith(f"{code}: ")


def _direct(w: World) -> Case:
    return Case([make_leaf(w.root)])


def _direct_with_root(w: World) -> Case:
    return Case([make_leaf(w.root), w.root.cert])


def _via_intermediate(w: World) -> Case:
    return Case([make_leaf(w.intermediate), w.intermediate.cert])


def _via_intermediate_with_root(w: World) -> Case:
    return Case([make_leaf(w.intermediate), w.intermediate.cert, w.root.cert])


def _rotated_root(w: World) -> Case:
    # Two roots share a name during a rotation: the one whose key signed the leaf anchors it.
    successor = make_ca("ATB test root")
    return Case([make_leaf(successor)], TrustBundle(TD, (w.root.cert, successor.cert)))


def _no_basic_constraints(w: World) -> Case:
    return Case([make_leaf(w.root, basic_constraints=False)])


def _with_dns_san(w: World) -> Case:
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(AGENT_ID), x509.DNSName("crm-bot.local")])
    return Case([make_leaf(w.root, uris=(), extra_extensions=((san, False),))])


def _at_the_last_second(w: World) -> Case:
    return Case([make_leaf(w.root, not_before=AT - DAY, not_after=AT)])


def _max_length(w: World) -> Case:
    cas = [w.root]
    for depth in range(4):
        cas.append(make_ca(f"Deep intermediate {depth}", issuer=cas[-1]))
    return Case([make_leaf(cas[-1]), *(ca.cert for ca in reversed(cas[1:]))])


GOOD: list[tuple[str, Build]] = [
    ("direct", _direct),
    ("direct-root-presented", _direct_with_root),
    ("one-intermediate", _via_intermediate),
    ("one-intermediate-root-presented", _via_intermediate_with_root),
    ("rotated-root", _rotated_root),
    ("no-basic-constraints", _no_basic_constraints),
    ("uri-and-dns-san", _with_dns_san),
    ("valid-until-exactly-now", _at_the_last_second),
    ("five-certificates", _max_length),
]


@pytest.mark.parametrize("build", [pytest.param(build, id=name) for name, build in GOOD])
def test_a_valid_chain_proves_its_spiffe_id(w: World, build: Build) -> None:
    case = build(w)
    assert validate_svid(case.chain, case.bundle or w.bundle, at=AT) == SpiffeId("atb.local", "/agent/crm-bot")


def test_the_chain_is_checked_at_the_time_given_not_now(w: World) -> None:
    chain = [make_leaf(w.root, not_before=AT - DAY, not_after=AT + DAY)]
    validate_svid(chain, w.bundle, at=AT)
    with pytest.raises(LeafExpiredError):
        validate_svid(chain, w.bundle, at=AT + 2 * DAY)


def test_a_naive_time_is_a_programming_error(w: World) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_svid([make_leaf(w.root)], w.bundle, at=AT.replace(tzinfo=None))


# --- trust bundles ---------------------------------------------------------------------------------


def test_an_empty_bundle_is_refused() -> None:
    with pytest.raises(TrustBundleError, match="holds no certificate"):
        TrustBundle(TD, ())


def test_a_bundle_of_a_leaf_is_refused(w: World) -> None:
    with pytest.raises(TrustBundleError, match="not a CA"):
        TrustBundle(TD, (make_leaf(w.root),))


def test_a_bundle_root_without_key_cert_sign_is_refused() -> None:
    with pytest.raises(TrustBundleError, match="keyCertSign"):
        TrustBundle(TD, (make_ca("No signing", key_usage={"crl_sign": True}).cert,))


def test_a_bundle_for_an_invalid_trust_domain_is_refused(w: World) -> None:
    with pytest.raises(InvalidSpiffeIdError):
        TrustBundle("ATB.local", (w.root.cert,))


def test_a_bundle_loads_every_pem_certificate(w: World, tmp_path: Path) -> None:
    path = tmp_path / "bundle.pem"
    path.write_bytes(b"".join(ca.cert.public_bytes(serialization.Encoding.PEM) for ca in (w.root, w.stranger)))
    assert TrustBundle.load(path, TD).roots == (w.root.cert, w.stranger.cert)


@pytest.mark.parametrize("content", [None, b"", b"not a certificate"], ids=["missing", "empty", "garbage"])
def test_an_unreadable_bundle_file_is_refused(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TrustBundleError, match="cannot read trust bundle"):
        TrustBundle.load(path, TD)


# --- SVIDs on disk ----------------------------------------------------------------------------------


def _write_svid(svid: Svid, folder: Path, *, key_mode: int = 0o600) -> tuple[Path, Path]:
    chain_path, key_path = folder / "chain.pem", folder / "key.pem"
    chain_path.write_bytes(b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in svid.chain))
    key_path.write_bytes(
        svid.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, key_mode)
    return chain_path, key_path


def test_an_svid_round_trips_through_its_files(w: World, tmp_path: Path) -> None:
    svid = make_svid(w.intermediate, intermediates=[w.intermediate])
    loaded = load_svid(*_write_svid(svid, tmp_path))
    assert loaded.spiffe_id == svid.spiffe_id
    assert loaded.chain == svid.chain
    assert loaded.x5c() == svid.x5c()
    assert (loaded.cert_path, loaded.key_path) == (tmp_path / "chain.pem", tmp_path / "key.pem")


def test_x5c_is_standard_base64_der_leaf_first(w: World) -> None:
    svid = make_svid(w.intermediate, intermediates=[w.intermediate])
    assert [base64.b64decode(item, validate=True) for item in svid.x5c()] == [
        cert.public_bytes(serialization.Encoding.DER) for cert in svid.chain
    ]


def test_thumbprint_is_rfc8705_x5t_s256(w: World) -> None:
    svid = make_svid(w.root)
    der = svid.leaf.public_bytes(serialization.Encoding.DER)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert svid.thumbprint() == cert_thumbprint(svid.leaf) == expected
    assert len(expected) == 43


def test_a_key_that_is_not_the_leafs_is_refused(w: World, tmp_path: Path) -> None:
    svid = make_svid(w.root)
    with pytest.raises(CredentialError, match="does not belong"):
        Svid(spiffe_id=svid.spiffe_id, key=Ed25519PrivateKey.generate(), chain=svid.chain)
    chain_path, _ = _write_svid(svid, tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = _write_svid(make_svid(w.root), tmp_path / "other")
    with pytest.raises(CredentialError, match="does not belong"):
        load_svid(chain_path, other_key)


def test_an_svid_must_name_its_leafs_id(w: World) -> None:
    svid = make_svid(w.root)
    with pytest.raises(CredentialError, match="does not name"):
        Svid(spiffe_id=SpiffeId.parse("spiffe://atb.local/agent/else"), key=svid.key, chain=svid.chain)


def test_a_group_writable_key_file_is_refused(w: World, tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="writable by group or others"):
        load_svid(*_write_svid(make_svid(w.root), tmp_path, key_mode=0o620))


def test_a_key_file_of_another_type_than_the_leafs_is_refused(w: World, tmp_path: Path) -> None:
    chain_path, key_path = _write_svid(make_svid(w.root), tmp_path)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    key_path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(CredentialError, match="does not belong to its leaf"):
        load_svid(chain_path, key_path)


@pytest.mark.parametrize("which", ["chain", "key"])
def test_missing_svid_files_are_refused(w: World, tmp_path: Path, which: str) -> None:
    chain_path, key_path = _write_svid(make_svid(w.root), tmp_path)
    (chain_path if which == "chain" else key_path).unlink()
    with pytest.raises(CredentialError, match="cannot read"):
        load_svid(chain_path, key_path)


def test_validity_errors_say_when(w: World) -> None:
    chain = [make_leaf(w.root, not_before=AT - 2 * DAY, not_after=AT - timedelta(hours=1))]
    with pytest.raises(LeafExpiredError, match="the leaf expired at 2026-01-15T11:00:00"):
        validate_svid(chain, w.bundle, at=AT)
