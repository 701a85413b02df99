"""Certificate factories shared by the identity tests, and the tests of the factories themselves.

Everything is real: Ed25519 keys and certificates made with `atb_identity.pki.build_certificate`,
at fixed times around `AT`, so no test depends on the clock. `world()` is built once per
session (functools.cache); the test modules wrap it in session-scoped fixtures.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from atb_identity import SpiffeId, Svid, TrustBundle, build_certificate, validate_svid

TD = "atb.local"
AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
AGENT_ID = "spiffe://atb.local/agent/crm-bot"
OTHER_AGENT_ID = "spiffe://atb.local/agent/other-bot"
DAY = timedelta(days=1)
CA_USAGE: Mapping[str, bool] = {"key_cert_sign": True, "crl_sign": True}
LEAF_USAGE: Mapping[str, bool] = {"digital_signature": True}


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: Ed25519PrivateKey


def make_ca(
    name: str,
    *,
    issuer: Ca | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    is_ca: bool = True,
    basic_constraints: bool = True,
    key_usage: Mapping[str, bool] | None = CA_USAGE,
    path_length: int | None = None,
    not_before: datetime = AT - 365 * DAY,
    not_after: datetime = AT + 365 * DAY,
) -> Ca:
    """A root (no issuer) or an intermediate; `signing_key` forges a signature under the issuer's name."""
    key = Ed25519PrivateKey.generate()
    default_signer = issuer.key if issuer is not None else key
    cert = build_certificate(
        subject_key=key.public_key(),
        issuer_cert=issuer.cert if issuer is not None else None,
        issuer_key=signing_key or default_signer,
        uris=(),
        is_ca=is_ca,
        basic_constraints=basic_constraints,
        key_usage=key_usage,
        path_length=path_length,
        not_before=not_before,
        not_after=not_after,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
    )
    return Ca(cert=cert, key=key)


def make_leaf(
    issuer: Ca,
    *,
    uris: Sequence[str] = (AGENT_ID,),
    key: Ed25519PrivateKey | None = None,
    subject_key: CertificatePublicKeyTypes | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    is_ca: bool = False,
    basic_constraints: bool = True,
    key_usage: Mapping[str, bool] | None = LEAF_USAGE,
    not_before: datetime = AT - DAY,
    not_after: datetime = AT + DAY,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A leaf that is a valid SVID for `AGENT_ID` unless an argument says otherwise."""
    public = subject_key or (key or Ed25519PrivateKey.generate()).public_key()
    return build_certificate(
        subject_key=public,
        issuer_cert=issuer.cert,
        issuer_key=signing_key or issuer.key,
        uris=uris,
        is_ca=is_ca,
        basic_constraints=basic_constraints,
        key_usage=key_usage,
        not_before=not_before,
        not_after=not_after,
        extra_extensions=extra_extensions,
    )


def make_svid(
    issuer: Ca,
    spiffe_id: str = AGENT_ID,
    *,
    intermediates: Sequence[Ca] = (),
    not_before: datetime = AT - DAY,
    not_after: datetime = AT + DAY,
) -> Svid:
    key = Ed25519PrivateKey.generate()
    leaf = make_leaf(issuer, uris=(spiffe_id,), key=key, not_before=not_before, not_after=not_after)
    chain = (leaf, *(ca.cert for ca in intermediates))
    return Svid(spiffe_id=SpiffeId.parse(spiffe_id), key=key, chain=chain)


@dataclass(frozen=True)
class World:
    """The trusted roots of `atb.local`, an intermediate under `root`, and a stranger CA."""

    root: Ca
    intermediate: Ca
    stranger: Ca
    bundle: TrustBundle


@functools.cache
def world() -> World:
    root = make_ca("ATB test root")
    return World(
        root=root,
        intermediate=make_ca("ATB test intermediate", issuer=root),
        stranger=make_ca("Stranger root"),
        bundle=TrustBundle(trust_domain=TD, roots=(root.cert,)),
    )


def test_a_default_leaf_is_a_valid_svid() -> None:
    # The bad-certificate tables change one argument of these factories: the default must pass.
    w = world()
    assert validate_svid([make_leaf(w.root)], w.bundle, at=AT) == SpiffeId.parse(AGENT_ID)


def test_the_stranger_is_not_trusted_by_the_bundle() -> None:
    w = world()
    assert w.stranger.cert not in w.bundle.roots
    assert w.stranger.cert.subject != w.root.cert.subject
