"""The development PKI: a local CA, its trust bundle, and X.509-SVIDs issued from it.

Files live under `<state>/pki/` (directories 0700, private keys 0600):

    bundle.pem                      the trust bundle: the CA certificate
    ca/ca.pem, ca/ca.key.pem        the CA (self-signed, Ed25519 unless chosen, path length 0)
    svids/<name>/chain.pem, key.pem one SVID per SPIFFE ID: leaf + CA, and the leaf's key
    .lock                           serialises processes that create or renew files

Leaves follow X509-SVID.md: one URI SAN, CA=false, key usage digitalSignature only,
both critical. Agents (`/agent/...`), approvers (`/user/...`) and services
(`/svc/...`) all get the same kind of leaf; authorisation is by SPIFFE ID elsewhere.

Keys are Ed25519 by default. `init_ca(key_type=...)` takes SPIRE's names
(`ec-p256`, SPIRE's default, `ec-p384`, `rsa-2048`, `rsa-4096`) to run the whole
PKI with the keys a SPIRE deployment has: the CA's key type is its leaves' too,
unless `issue_svid`/`ensure_svid` are given another.

For development and tests only: no HSM, no revocation, no CA rotation. In
production SVIDs come from SPIRE or another SPIFFE issuer; only the bundle format
and `svid.validate_svid` are shared with this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atb_identity.algorithms import SvidPrivateKey, check_private_key
from atb_identity.errors import (
    ForeignTrustDomainError,
    IdentityError,
    InvalidSpiffeIdError,
    PkiError,
    UnsupportedAlgorithmError,
)
from atb_identity.spiffe import SCHEME_PREFIX, SpiffeId, validate_trust_domain
from atb_identity.svid import Svid, TrustBundle, load_svid, validate_svid

__all__ = [
    "DEFAULT_KEY_TYPE",
    "DEFAULT_SVID_HOURS",
    "DEFAULT_TRUST_DOMAIN",
    "KEY_TYPES",
    "KeyType",
    "build_certificate",
    "bundle_path",
    "ca_paths",
    "ensure_svid",
    "generate_key",
    "init_ca",
    "issue_svid",
    "key_type_of",
    "svid_paths",
]

log = logging.getLogger(__name__)

DEFAULT_TRUST_DOMAIN = "atb.local"
DEFAULT_CA_DAYS = 3650
DEFAULT_SVID_HOURS = 24.0 * 30
BACKDATE = timedelta(minutes=5)
"""Leaves start 5 minutes in the past, so a peer whose clock lags a little accepts them."""

_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
KeyType = Literal["ed25519", "ec-p256", "ec-p384", "rsa-2048", "rsa-4096"]
"""Key types by SPIRE's names (its `ca_key_type` / `workload_x509_svid_key_type`), plus Ed25519."""
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)
DEFAULT_KEY_TYPE: KeyType = "ed25519"

_LEAF_SUBJECT = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
_MAX_DIR_NAME = 120


# --- paths ----------------------------------------------------------------------------------


def _pki_dir(state_dir: Path) -> Path:
    return state_dir / "pki"


def bundle_path(state_dir: Path) -> Path:
    """The trust bundle (PEM) every verifier of this dev PKI loads."""
    return _pki_dir(state_dir) / "bundle.pem"


def ca_paths(state_dir: Path) -> tuple[Path, Path]:
    """(CA certificate, CA private key)."""
    ca_dir = _pki_dir(state_dir) / "ca"
    return ca_dir / "ca.pem", ca_dir / "ca.key.pem"


def svid_paths(state_dir: Path, spiffe_id: str) -> tuple[Path, Path]:
    """(chain.pem, key.pem) of the SVID for `spiffe_id`; raises InvalidSpiffeIdError."""
    folder = _pki_dir(state_dir) / "svids" / _dir_name(SpiffeId.parse(spiffe_id))
    return folder / "chain.pem", folder / "key.pem"


def _dir_name(spiffe_id: SpiffeId) -> str:
    """A file name that is injective over SPIFFE IDs: `~` occurs in no trust domain or segment."""
    name = spiffe_id.trust_domain + spiffe_id.path.replace("/", "~")
    if len(name) <= _MAX_DIR_NAME:
        return name
    digest = hashlib.sha256(str(spiffe_id).encode()).hexdigest()[:32]
    return f"{name[:100]}~{digest}"  # longer than any untruncated name, so no clash with one


# --- keys -----------------------------------------------------------------------------------


def generate_key(key_type: KeyType) -> SvidPrivateKey:
    """A fresh private key of `key_type`; ValueError for a name that is not one of KEY_TYPES."""
    if key_type == "ed25519":
        return Ed25519PrivateKey.generate()
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.removeprefix("rsa-")))
    raise ValueError(f"unknown key type {key_type!r}; one of {', '.join(KEY_TYPES)}")


def key_type_of(key: SvidPrivateKey | CertificatePublicKeyTypes) -> KeyType:
    """The KEY_TYPES name of a key, or PkiError for a key of none of them."""
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        names: dict[str, KeyType] = {ec.SECP256R1.name: "ec-p256", ec.SECP384R1.name: "ec-p384"}
        if key.curve.name in names:
            return names[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size in (2048, 4096):
        return "rsa-2048" if key.key_size == 2048 else "rsa-4096"
    raise PkiError(f"a {type(key).__name__} is none of the dev PKI's key types ({', '.join(KEY_TYPES)})")


def _signature_hash(key: SvidPrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """What a certificate signed by `key` is hashed with (None: Ed25519 hashes internally)."""
    if isinstance(key, Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


# --- certificates ---------------------------------------------------------------------------


def build_certificate(
    *,
    subject_key: CertificatePublicKeyTypes,
    issuer_cert: x509.Certificate | None,
    issuer_key: SvidPrivateKey,
    uris: Sequence[str],
    is_ca: bool,
    key_usage: Mapping[str, bool] | None,
    not_before: datetime,
    not_after: datetime,
    subject: x509.Name | None = None,
    basic_constraints: bool = True,
    path_length: int | None = None,
    extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """Sign one certificate. Deliberately permissive: tests use it to craft bad ones.

    `issuer_cert=None` self-signs. `key_usage` maps `x509.KeyUsage` argument names to
    True (unnamed ones are False); None leaves the extension out, as does
    `basic_constraints=False` for BasicConstraints. The subject defaults to O=SPIFFE.
    """
    subject = subject if subject is not None else _LEAF_SUBJECT
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for extension, critical in _extensions(uris, is_ca, key_usage, basic_constraints, path_length, extended_key_usage):
        builder = builder.add_extension(extension, critical=critical)
    for extension, critical in extra_extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, algorithm=_signature_hash(issuer_key))


def _extensions(
    uris: Sequence[str],
    is_ca: bool,
    key_usage: Mapping[str, bool] | None,
    basic_constraints: bool,
    path_length: int | None,
    extended_key_usage: Sequence[x509.ObjectIdentifier],
) -> Iterator[tuple[x509.ExtensionType, bool]]:
    if basic_constraints:
        yield x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), True
    if key_usage is not None:
        yield _key_usage(key_usage), True
    if extended_key_usage:
        yield x509.ExtendedKeyUsage(list(extended_key_usage)), False
    if uris:
        yield x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]), False


def _key_usage(flags: Mapping[str, bool]) -> x509.KeyUsage:
    unknown = set(flags) - set(_KEY_USAGES)
    if unknown:
        raise ValueError(f"unknown key usage(s): {', '.join(sorted(unknown))}")
    return x509.KeyUsage(**{name: bool(flags.get(name, False)) for name in _KEY_USAGES})


# --- the CA -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ca:
    cert: x509.Certificate
    key: SvidPrivateKey
    trust_domain: str

    @property
    def key_type(self) -> KeyType:
        return key_type_of(self.key)


def init_ca(
    state_dir: Path,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    *,
    days: int = DEFAULT_CA_DAYS,
    key_type: KeyType | None = None,
) -> Path:
    """Create the dev CA unless one exists (kept as it is), write the bundle, return its path.

    `key_type` is the new CA's (default Ed25519); an existing CA of another key type is refused.
    """
    validate_trust_domain(trust_domain)
    if days <= 0:
        raise ValueError(f"days must be positive, not {days}")
    if key_type is not None and key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}; one of {', '.join(KEY_TYPES)}")
    with _locked(state_dir):
        ca = _ensure_ca(state_dir, trust_domain, days=days, key_type=key_type)
    if key_type is not None and ca.key_type != key_type:
        raise PkiError(
            f"the CA in {ca_paths(state_dir)[0].parent} has an {ca.key_type} key, not {key_type}; "
            "remove the folder to start over with another key type"
        )
    return bundle_path(state_dir)


def _ensure_ca(
    state_dir: Path, trust_domain: str, *, days: int = DEFAULT_CA_DAYS, key_type: KeyType | None = None
) -> _Ca:
    ca = _load_ca(state_dir) or _create_ca(state_dir, trust_domain, days, key_type or DEFAULT_KEY_TYPE)
    if ca.trust_domain != trust_domain:
        raise PkiError(
            f"the CA in {ca_paths(state_dir)[0].parent} is for {ca.trust_domain}, not {trust_domain}; "
            "use that trust domain or remove the folder to start over"
        )
    if datetime.now(UTC) > ca.cert.not_valid_after_utc:
        raise PkiError(f"the dev CA expired at {ca.cert.not_valid_after_utc}; remove {_pki_dir(state_dir)}")
    pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    bundle = bundle_path(state_dir)
    if not bundle.exists() or bundle.read_bytes() != pem:
        _write_file(bundle, pem, 0o644)
    return ca


def _create_ca(state_dir: Path, trust_domain: str, days: int, key_type: KeyType) -> _Ca:
    key = generate_key(key_type)
    now = datetime.now(UTC)
    cert = build_certificate(
        subject_key=key.public_key(),
        issuer_cert=None,
        issuer_key=key,
        uris=[f"{SCHEME_PREFIX}{trust_domain}"],  # X509-SVID.md §3: a CA may carry its trust domain's ID
        is_ca=True,
        path_length=0,  # it issues leaves only
        key_usage={"key_cert_sign": True, "crl_sign": True},
        not_before=now - BACKDATE,
        not_after=now + timedelta(days=days),
        subject=x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ATB development"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"ATB dev CA {trust_domain}"),
            ]
        ),
    )
    cert_path, key_path = ca_paths(state_dir)
    staging = Path(tempfile.mkdtemp(prefix=".ca-", dir=_pki_dir(state_dir)))  # 0700
    _write_file(staging / key_path.name, _key_pem(key), 0o600)
    _write_file(staging / cert_path.name, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    os.rename(staging, cert_path.parent)  # atomic: a CA folder is complete or absent
    log.info("created the dev CA for %s in %s", trust_domain, cert_path.parent)
    return _Ca(cert=cert, key=key, trust_domain=trust_domain)


def _load_ca(state_dir: Path) -> _Ca | None:
    cert_path, key_path = ca_paths(state_dir)
    if not cert_path.exists() and not key_path.exists():
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"the dev CA in {cert_path.parent} is unreadable: {exc}") from exc
    if key_path.stat().st_mode & 0o077:
        raise PkiError(f"the CA key {key_path} is accessible to group or others; chmod 600 it")
    try:
        ca_key = check_private_key(key)
    except UnsupportedAlgorithmError as exc:
        raise PkiError(f"the CA key in {key_path} is unusable: {exc.reason}") from exc
    if _spki(ca_key.public_key()) != _spki(cert.public_key()):
        raise PkiError(f"the CA key in {key_path} is not the key of {cert_path}")
    return _Ca(cert=cert, key=ca_key, trust_domain=_ca_trust_domain(cert, cert_path))


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _ca_trust_domain(cert: x509.Certificate, path: Path) -> str:
    """The trust domain a dev CA names in its one `spiffe://<td>` URI SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise PkiError(f"{path} has no URI SAN naming its trust domain") from exc
    if len(uris) != 1 or not uris[0].startswith(SCHEME_PREFIX):
        raise PkiError(f"{path} does not name its trust domain as one spiffe://<td> URI SAN")
    trust_domain = uris[0].removeprefix(SCHEME_PREFIX)
    try:
        validate_trust_domain(trust_domain)
    except InvalidSpiffeIdError as exc:
        raise PkiError(f"{path} names an invalid trust domain: {exc.reason}") from exc
    return trust_domain


# --- SVIDs -------------------------------------------------------------------------------------


def issue_svid(
    state_dir: Path,
    spiffe_id: str,
    *,
    hours: float = DEFAULT_SVID_HOURS,
    trust_domain: str | None = None,
    key_type: KeyType | None = None,
) -> Svid:
    """Issue a fresh SVID for `spiffe_id`, replacing any earlier one; create the CA if there is none.

    `trust_domain` defaults to the existing CA's, else `atb.local`; an ID of any
    other trust domain is refused with ForeignTrustDomainError. `key_type` (the
    leaf's) defaults to the CA's.
    """
    parsed = _requested(spiffe_id, hours, key_type)
    with _locked(state_dir):
        ca = _ca_for(state_dir, parsed, trust_domain)
        return _issue(state_dir, ca, parsed, hours, key_type or ca.key_type)


def ensure_svid(
    state_dir: Path,
    spiffe_id: str,
    *,
    min_remaining_hours: float = 1.0,
    hours: float = DEFAULT_SVID_HOURS,
    trust_domain: str | None = None,
    key_type: KeyType | None = None,
) -> Svid:
    """The SVID for `spiffe_id`: the one on disk unless it is unusable, expires within
    `min_remaining_hours`, or has a key of another type than `key_type` (default: the CA's)."""
    parsed = _requested(spiffe_id, hours, key_type)
    if not 0 <= min_remaining_hours < hours:
        raise ValueError(f"min_remaining_hours must be in [0, hours={hours}), not {min_remaining_hours}")
    with _locked(state_dir):
        ca = _ca_for(state_dir, parsed, trust_domain)
        wanted = key_type or ca.key_type
        current = _reusable(state_dir, ca, parsed, timedelta(hours=min_remaining_hours), wanted)
        return current if current is not None else _issue(state_dir, ca, parsed, hours, wanted)


def _requested(spiffe_id: str, hours: float, key_type: KeyType | None) -> SpiffeId:
    parsed = SpiffeId.parse(spiffe_id)
    if not hours > 0:
        raise ValueError(f"hours must be positive, not {hours}")
    if key_type is not None and key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}; one of {', '.join(KEY_TYPES)}")
    return parsed


def _ca_for(state_dir: Path, spiffe_id: SpiffeId, trust_domain: str | None) -> _Ca:
    """The CA to issue `spiffe_id` from, refusing an ID outside its trust domain before creating anything."""
    if trust_domain is None:
        existing = _load_ca(state_dir)
        trust_domain = existing.trust_domain if existing is not None else DEFAULT_TRUST_DOMAIN
    if spiffe_id.trust_domain != trust_domain:
        raise ForeignTrustDomainError(f"{spiffe_id} is not in trust domain {trust_domain}; this CA will not issue it")
    return _ensure_ca(state_dir, trust_domain)


def _reusable(state_dir: Path, ca: _Ca, spiffe_id: SpiffeId, margin: timedelta, key_type: KeyType) -> Svid | None:
    chain_path, key_path = svid_paths(state_dir, str(spiffe_id))
    if not chain_path.exists():
        return None
    now = datetime.now(UTC)
    try:
        svid = load_svid(chain_path, key_path)
        proven = validate_svid(svid.chain, TrustBundle(ca.trust_domain, (ca.cert,)), at=now)
    except IdentityError as exc:
        log.info("renewing the SVID of %s: %s", spiffe_id, exc)
        return None
    if proven != spiffe_id or svid.leaf.not_valid_after_utc - now < margin:
        return None
    if key_type_of(svid.key) != key_type:
        log.info("renewing the SVID of %s: its key is %s, not %s", spiffe_id, key_type_of(svid.key), key_type)
        return None
    return svid


def _issue(state_dir: Path, ca: _Ca, spiffe_id: SpiffeId, hours: float, key_type: KeyType) -> Svid:
    now = datetime.now(UTC)
    key = generate_key(key_type)
    leaf = build_certificate(
        subject_key=key.public_key(),
        issuer_cert=ca.cert,
        issuer_key=ca.key,
        uris=[str(spiffe_id)],
        is_ca=False,
        key_usage={"digital_signature": True},
        extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH),
        not_before=now - BACKDATE,
        not_after=min(now + timedelta(hours=hours), ca.cert.not_valid_after_utc),  # never outlive the CA
    )
    chain_path, key_path = svid_paths(state_dir, str(spiffe_id))
    _private_dir(chain_path.parent)
    # Key first: a reader between the two replaces sees a key/chain mismatch and fails closed.
    _write_file(key_path, _key_pem(key), 0o600)
    _write_file(chain_path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca.cert)), 0o644)
    return Svid(spiffe_id=spiffe_id, key=key, chain=(leaf, ca.cert), cert_path=chain_path, key_path=key_path)


# --- files -------------------------------------------------------------------------------------


def _key_pem(key: SvidPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # also tightens a folder left looser by hand
    return path


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically: the file is the old one or the new one, never half of either."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Hold `<state>/pki/.lock` so concurrent processes neither create two CAs nor interleave files."""
    root = _private_dir(_pki_dir(state_dir))
    _private_dir(root / "svids")
    with open(root / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
