"""A SPIRE-like CA for tests: the X.509-SVIDs a SPIRE server issues, as spiffe-helper writes them.

SPIRE's defaults (server `ca_key_type` and `workload_x509_svid_key_type` both
`ec-p256`): a self-signed CA with an EC P-256 key, subject `C=US, O=SPIFFE` and
its trust domain's ID as URI SAN, signing workload leaves with ECDSA-SHA256.
Each leaf has subject `C=US, O=SPIRE, x500UniqueIdentifier=<random>`, key usage
digitalSignature, keyEncipherment and keyAgreement (critical), extended key
usage serverAuth and clientAuth, CA=false (critical), and the workload's SPIFFE
ID as its only URI SAN. With an UpstreamAuthority the SPIRE server's CA is an
intermediate under the upstream root instead (`SpireCa.intermediate`).

`write_helper_files` writes what spiffe-helper writes into its `cert_dir`:
`svid.pem` (the leaf, then any intermediates), `svid_key.pem` (PKCS#8, 0600) and
`bundle.pem` (the trust domain's roots). Everything is real X.509, made with
`cryptography`; nothing here talks to SPIRE.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atb_identity import KeyType, SpiffeId, Svid, TrustBundle, build_certificate, generate_key
from atb_identity.algorithms import SvidPrivateKey

__all__ = ["HelperFiles", "SpireCa", "write_helper_files"]

_LEAF_USAGE = {"digital_signature": True, "key_encipherment": True, "key_agreement": True}
_CA_USAGE = {"key_cert_sign": True, "crl_sign": True}
_X500_UNIQUE_IDENTIFIER = x509.ObjectIdentifier("2.5.4.45")


@dataclass(frozen=True)
class SpireCa:
    """A SPIRE server's signing CA: self-signed, or an intermediate under an upstream root."""

    trust_domain: str
    cert: x509.Certificate
    key: SvidPrivateKey
    roots: tuple[x509.Certificate, ...]
    """The trust bundle: this CA itself, or the upstream root it chains to."""
    intermediates: tuple[x509.Certificate, ...] = ()
    """What a leaf's `svid.pem` carries after the leaf (SPIRE's CA when it is an intermediate)."""

    @classmethod
    def create(
        cls,
        trust_domain: str = "atb.local",
        *,
        key_type: KeyType = "ec-p256",
        now: datetime | None = None,
        days: int = 7,
    ) -> SpireCa:
        now = now or datetime.now(UTC)
        key = generate_key(key_type)
        cert = build_certificate(
            subject_key=key.public_key(),
            issuer_cert=None,
            issuer_key=key,
            uris=[f"spiffe://{trust_domain}"],
            is_ca=True,
            key_usage=_CA_USAGE,
            not_before=now - timedelta(seconds=10),
            not_after=now + timedelta(days=days),
            subject=_name(organization="SPIFFE"),
        )
        return cls(trust_domain, cert, key, (cert,))

    def intermediate(self, *, key_type: KeyType = "ec-p256", now: datetime | None = None) -> SpireCa:
        """A SPIRE server CA signed by this one (an UpstreamAuthority): its leaves carry it in `svid.pem`."""
        now = now or datetime.now(UTC)
        key = generate_key(key_type)
        cert = build_certificate(
            subject_key=key.public_key(),
            issuer_cert=self.cert,
            issuer_key=self.key,
            uris=[f"spiffe://{self.trust_domain}"],
            is_ca=True,
            key_usage=_CA_USAGE,
            not_before=now - timedelta(seconds=10),
            not_after=self.cert.not_valid_after_utc,
            subject=_name(organization="SPIFFE", serial=True),
        )
        return SpireCa(self.trust_domain, cert, key, self.roots, (cert, *self.intermediates))

    @property
    def bundle(self) -> TrustBundle:
        return TrustBundle(self.trust_domain, self.roots)

    def issue(
        self,
        spiffe_id: str,
        *,
        key_type: KeyType = "ec-p256",
        now: datetime | None = None,
        hours: float = 1.0,
        dns_names: tuple[str, ...] = (),
    ) -> Svid:
        """A workload X.509-SVID as SPIRE issues it (SPIRE's default SVID lifetime is an hour)."""
        now = now or datetime.now(UTC)
        key = generate_key(key_type)
        extra: list[tuple[x509.ExtensionType, bool]] = []
        uris: list[str] = [spiffe_id]
        if dns_names:  # SPIRE puts DNS names in the same SAN extension as the SPIFFE ID
            san = [x509.UniformResourceIdentifier(spiffe_id), *(x509.DNSName(d) for d in dns_names)]
            extra.append((x509.SubjectAlternativeName(san), False))
            uris = []
        leaf = build_certificate(
            subject_key=key.public_key(),
            issuer_cert=self.cert,
            issuer_key=self.key,
            uris=uris,
            is_ca=False,
            key_usage=_LEAF_USAGE,
            extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            not_before=now - timedelta(seconds=10),
            not_after=min(now + timedelta(hours=hours), self.cert.not_valid_after_utc),
            subject=_name(organization="SPIRE", serial=True),
            extra_extensions=extra,
        )
        return Svid(spiffe_id=SpiffeId.parse(spiffe_id), key=key, chain=(leaf, *self.intermediates))


def _name(*, organization: str, serial: bool = False) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ]
    if serial:
        attributes.append(x509.NameAttribute(_X500_UNIQUE_IDENTIFIER, secrets.token_hex(16)))
    return x509.Name(attributes)


@dataclass(frozen=True)
class HelperFiles:
    """The files spiffe-helper keeps in its `cert_dir` (and the chart mounts at /run/atb/svid)."""

    svid: Path
    key: Path
    bundle: Path

    def env(self) -> dict[str, str]:
        """The settings every ATB service reads them from."""
        return {
            "ATB_SVID_CERT_PATH": str(self.svid),
            "ATB_SVID_KEY_PATH": str(self.key),
            "ATB_TRUST_BUNDLE_PATH": str(self.bundle),
        }


def write_helper_files(svid: Svid, roots: tuple[x509.Certificate, ...], folder: Path) -> HelperFiles:
    """Write `svid.pem`, `svid_key.pem` (PKCS#8, 0600) and `bundle.pem` into `folder` (created 0700)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = HelperFiles(folder / "svid.pem", folder / "svid_key.pem", folder / "bundle.pem")
    pem = serialization.Encoding.PEM
    files.svid.write_bytes(b"".join(cert.public_bytes(pem) for cert in svid.chain))
    files.key.touch(mode=0o600)
    files.key.write_bytes(svid.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files.bundle.write_bytes(b"".join(cert.public_bytes(pem) for cert in roots))
    return files
