"""X.509-SVIDs: load them, and validate a presented chain against a trust bundle.

`validate_svid` applies the X.509-SVID rules (spiffe/standards
X509-SVID.md §2-§5; docs/architecture.md §4.5) and returns the SPIFFE ID the chain proves,
or raises one named `SvidError` (or `InvalidSpiffeIdError`) per broken rule:

* the leaf has exactly one URI SAN, a valid SPIFFE ID of the bundle's trust domain;
* the leaf is no CA, cannot sign certificates or CRLs, and can sign (digitalSignature);
* every certificate is inside its validity period at the time given;
* every intermediate is a CA with keyCertSign, within its path length;
* each certificate is signed by the next, and the last by a root of the bundle.

It deliberately does not do revocation (SPIFFE relies on short lifetimes), name
constraints (a critical extension it does not process fails the chain instead),
or I/O beyond `TrustBundle.load` and `load_svid`. It never reads the clock: the
caller says when.
"""

from __future__ import annotations

import base64
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtensionOID

from atb_identity.algorithms import ProofAlg, SvidPrivateKey, alg_for_key, check_private_key
from atb_identity.errors import (
    BadCertificateSignatureError,
    ChainTooLongError,
    CredentialError,
    EmptyChainError,
    ForeignTrustDomainError,
    IntermediateExpiredError,
    IntermediateKeyUsageError,
    IntermediateNotCaError,
    IntermediateNotYetValidError,
    IssuerMismatchError,
    LeafCrlSignError,
    LeafExpiredError,
    LeafIsCaError,
    LeafKeyCertSignError,
    LeafNotYetValidError,
    MalformedCertificateError,
    MissingDigitalSignatureError,
    MultipleUriSansError,
    NoUriSanError,
    PathLengthExceededError,
    RootExpiredError,
    RootNotYetValidError,
    TrustBundleError,
    UnhandledCriticalExtensionError,
    UnsupportedAlgorithmError,
    UntrustedIssuerError,
    ValidityError,
)
from atb_identity.spiffe import SpiffeId, validate_trust_domain
from contracts.poa import x5t_s256

__all__ = [
    "MAX_CHAIN_LENGTH",
    "Svid",
    "TrustBundle",
    "cert_thumbprint",
    "load_svid",
    "spiffe_id_of",
    "validate_svid",
]

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=x509.ExtensionType)

MAX_CHAIN_LENGTH = 5
"""Leaf plus intermediates (plus the root, when the presenter includes it)."""

# Extensions whose criticality we honour. EKU is listed although we do not require a
# purpose: SPIFFE leaves may carry any EKU. NOTE: an SVID proves who produced an event,
# whatever TLS purposes it also has. Anything else marked critical fails the chain
# (RFC 5280 §4.2: a verifier must reject a critical extension it does not process).
_HANDLED_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _extension(cert, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


@dataclass(frozen=True)
class TrustBundle:
    """The CA certificates trusted for one trust domain. An empty bundle is refused."""

    trust_domain: str
    roots: tuple[x509.Certificate, ...]
    generation: int = field(default=0, compare=False)
    """How many times `renew` replaced the roots: what was validated against an earlier generation is not
    reused (atb_identity.proof remembers validated chains per bundle and generation)."""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if not self.roots:
            raise TrustBundleError(f"the bundle for {self.trust_domain} holds no certificate")
        for root in self.roots:
            if not _is_ca(root):
                raise TrustBundleError(f"bundle certificate {_describe(root)} is not a CA")
            usage = _extension(root, x509.KeyUsage)
            if usage is not None and not usage.key_cert_sign:
                raise TrustBundleError(f"bundle certificate {_describe(root)} lacks keyCertSign")

    def renew(self, new: TrustBundle) -> None:
        """Take `new`'s roots in place: every holder of this bundle verifies with them from now on.

        A bundle file is rewritten when the trust domain's CA rotates (SPIRE adds the next CA before it
        signs with it). Only the same trust domain's bundle may replace this one.
        """
        if new.trust_domain != self.trust_domain:
            raise TrustBundleError(f"a bundle for {new.trust_domain} cannot renew the bundle of {self.trust_domain}")
        object.__setattr__(self, "roots", new.roots)
        object.__setattr__(self, "generation", self.generation + 1)

    @classmethod
    def load(cls, path: Path, trust_domain: str) -> TrustBundle:
        """Read a PEM file holding one or more CA certificates."""
        try:
            roots = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise TrustBundleError(f"cannot read trust bundle {path}: {exc}") from exc
        return cls(trust_domain=trust_domain, roots=tuple(roots))


@dataclass(frozen=True)
class Svid:
    """An X.509-SVID with its private key: the chain is leaf first, the key the leaf's.

    The key is Ed25519 (the dev CA), EC P-256 (SPIRE's default), EC P-384 or RSA
    2048-4096 bits; `alg` is the proof algorithm it signs with (`algorithms`).
    """

    spiffe_id: SpiffeId
    key: SvidPrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    cert_path: Path | None = None
    key_path: Path | None = None
    _x5c: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        if not self.chain:
            raise CredentialError(f"the SVID of {self.spiffe_id} has no certificate")
        try:
            check_private_key(self.key)
        except UnsupportedAlgorithmError as exc:
            raise CredentialError(f"the private key of {self.spiffe_id} cannot sign proofs: {exc.reason}") from exc
        if _spki(self.chain[0].public_key()) != _spki(self.key.public_key()):
            raise CredentialError(f"the private key of {self.spiffe_id} does not belong to its leaf certificate")
        if spiffe_id_of(self.chain[0]) != self.spiffe_id:
            raise CredentialError(f"the leaf certificate does not name {self.spiffe_id}")
        # Every signed event carries it: encoded once per SVID, not once per event.
        x5c = tuple(base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode() for cert in self.chain)
        object.__setattr__(self, "_x5c", x5c)

    def renew(self, new: Svid) -> None:
        """Take `new`'s key and chain in place: every holder of this SVID signs with them from now on.

        SPIRE renews an X.509-SVID at half its lifetime (an hour by default) and spiffe-helper rewrites
        the files; a service that kept its first SVID would sign with an expired certificate. Only a
        renewal of the same SPIFFE ID is taken (`new` was checked as any SVID is: key and leaf match).
        """
        if new.spiffe_id != self.spiffe_id:
            raise CredentialError(f"an SVID of {new.spiffe_id} cannot renew the SVID of {self.spiffe_id}")
        for name in ("key", "chain", "cert_path", "key_path", "_x5c"):
            object.__setattr__(self, name, getattr(new, name))

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def alg(self) -> ProofAlg:
        """The proof algorithm of this SVID's key (Ed25519, ES256, ES384 or RS256)."""
        return alg_for_key(self.key)

    def x5c(self) -> tuple[str, ...]:
        """The chain as RFC 7515 §4.1.6 `x5c`: standard base64 of each DER, leaf first."""
        return self._x5c

    def thumbprint(self) -> str:
        """RFC 8705 §3.1 `x5t#S256` of the leaf."""
        return cert_thumbprint(self.leaf)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo: equal for two keys exactly when type, parameters and value are."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_thumbprint(cert: x509.Certificate) -> str:
    """RFC 8705 §3.1: base64url (no padding) of the SHA-256 of the certificate's DER."""
    return x5t_s256(cert.public_bytes(serialization.Encoding.DER))


def load_svid(cert_path: Path, key_path: Path) -> Svid:
    """Read a PEM chain (leaf first) and its PEM private key; raise CredentialError if unusable.

    These are the files spiffe-helper writes (`svid.pem`, `svid_key.pem`), the dev
    PKI's (`chain.pem`, `key.pem`) or a Secret's: the key is PKCS#8 (or, for EC and
    RSA, the traditional SEC1 / PKCS#1 form), unencrypted, of a type `Svid` accepts.
    """
    try:
        chain = tuple(x509.load_pem_x509_certificates(cert_path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise CredentialError(f"cannot read certificate chain {cert_path}: {exc}") from exc
    key = _load_key(key_path)
    return Svid(spiffe_id=spiffe_id_of(chain[0]), key=key, chain=chain, cert_path=cert_path, key_path=key_path)


def _load_key(path: Path) -> SvidPrivateKey:
    try:
        mode = path.stat().st_mode & 0o777
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CredentialError(f"cannot read private key {path}: {exc}") from exc
    if mode & 0o022:
        raise CredentialError(f"{path} is writable by group or others (mode {mode:o}): refusing to use it")
    if mode & 0o044:
        log.warning("SVID key %s is readable by group or others (mode %o); chmod 600 it", path, mode)
    try:
        return check_private_key(key)
    except UnsupportedAlgorithmError as exc:
        raise CredentialError(f"{path} cannot sign proofs: {exc.reason}") from exc


# --- validation ---------------------------------------------------------------------------


def validate_svid(chain: Sequence[x509.Certificate], bundle: TrustBundle, *, at: datetime) -> SpiffeId:
    """Return the SPIFFE ID `chain` (leaf first) proves under `bundle` at `at`, or raise the broken rule."""
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    if not chain:
        raise EmptyChainError("the certificate chain is empty")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise ChainTooLongError(f"the chain has {len(chain)} certificates, more than {MAX_CHAIN_LENGTH}")
    leaf = chain[0]
    spiffe_id = spiffe_id_of(leaf)
    if spiffe_id.trust_domain != bundle.trust_domain:
        raise ForeignTrustDomainError(f"{spiffe_id} is not in trust domain {bundle.trust_domain}")
    _check_leaf(leaf)
    _check_validity(leaf, at, LeafExpiredError, LeafNotYetValidError, "the leaf")
    _check_path(chain, bundle, at)
    return spiffe_id


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in the certificate's only URI SAN (X509-SVID.md §2). Does not check trust."""
    san = _extension(cert, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    if not uris:
        raise NoUriSanError("the leaf has no URI SAN; an X.509-SVID carries exactly one")
    if len(uris) > 1:
        raise MultipleUriSansError(f"the leaf has {len(uris)} URI SANs; an X.509-SVID carries exactly one")
    return SpiffeId.parse(uris[0])


def _check_leaf(leaf: x509.Certificate) -> None:
    """X509-SVID.md §4.1, §4.3: a leaf is no CA, signs, and signs neither certificates nor CRLs."""
    _check_critical_extensions(leaf)
    if _is_ca(leaf):
        raise LeafIsCaError("the leaf has BasicConstraints CA=true")
    usage = _extension(leaf, x509.KeyUsage)
    if usage is not None and usage.key_cert_sign:
        raise LeafKeyCertSignError("the leaf has key usage keyCertSign")
    if usage is not None and usage.crl_sign:
        raise LeafCrlSignError("the leaf has key usage cRLSign")
    if usage is None or not usage.digital_signature:
        raise MissingDigitalSignatureError("the leaf lacks key usage digitalSignature")


def _check_path(chain: Sequence[x509.Certificate], bundle: TrustBundle, at: datetime) -> None:
    """Each certificate is issued by the next; the last one is, or is issued by, a bundle root."""
    presented = list(chain)
    if len(presented) > 1 and presented[-1] in bundle.roots:
        presented.pop()  # the presenter included the root itself: it is the anchor below
    for depth, intermediate in enumerate(presented[1:]):
        _check_intermediate(intermediate, below=depth, at=at)
    for cert, issuer in itertools.pairwise(presented):
        _check_issued_by(cert, issuer)
    root = _anchor(presented[-1], bundle)
    _check_ca_path_length(root, below=len(presented) - 1, role="the root")
    _check_validity(root, at, RootExpiredError, RootNotYetValidError, "the root")


def _check_intermediate(cert: x509.Certificate, *, below: int, at: datetime) -> None:
    _check_critical_extensions(cert)
    if not _is_ca(cert):
        raise IntermediateNotCaError(
            f"intermediate {_describe(cert)} is not a CA (BasicConstraints CA=false or absent)"
        )
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        raise IntermediateKeyUsageError(f"intermediate {_describe(cert)} lacks key usage keyCertSign")
    _check_ca_path_length(cert, below=below, role=f"intermediate {_describe(cert)}")
    _check_validity(cert, at, IntermediateExpiredError, IntermediateNotYetValidError, f"intermediate {_describe(cert)}")


def _check_ca_path_length(cert: x509.Certificate, *, below: int, role: str) -> None:
    """RFC 5280 §4.2.1.9: at most `path_length` intermediates may follow this CA."""
    constraints = _extension(cert, x509.BasicConstraints)
    limit = constraints.path_length if constraints is not None else None
    if limit is not None and below > limit:
        raise PathLengthExceededError(f"{role} allows {limit} intermediate(s) below it, the chain has {below}")


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    if cert.issuer != issuer.subject:
        raise IssuerMismatchError(
            f"{_describe(cert)} names issuer {cert.issuer.rfc4514_string()!r}, "
            f"but the next certificate is {issuer.subject.rfc4514_string()!r}"
        )
    _verify_signature(cert, issuer)


def _verify_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadCertificateSignatureError(
            f"the signature on {_describe(cert)} does not verify with the key of {_describe(issuer)}"
        ) from exc


def _anchor(last: x509.Certificate, bundle: TrustBundle) -> x509.Certificate:
    """The bundle root that issued `last`."""
    named = [root for root in bundle.roots if root.subject == last.issuer]
    if not named:
        raise UntrustedIssuerError(
            f"{_describe(last)} is issued by {last.issuer.rfc4514_string()!r}, "
            f"which is no root of trust domain {bundle.trust_domain}"
        )
    for root in named:  # several roots may share a name during a CA rotation
        try:
            _verify_signature(last, root)
        except BadCertificateSignatureError:
            continue
        return root
    raise BadCertificateSignatureError(
        f"the signature on {_describe(last)} does not verify with the key of any bundle root of that name"
    )


def _check_validity(
    cert: x509.Certificate,
    at: datetime,
    expired: type[ValidityError],
    not_yet_valid: type[ValidityError],
    role: str,
) -> None:
    if at < cert.not_valid_before_utc:
        raise not_yet_valid(f"{role} is not valid before {cert.not_valid_before_utc.isoformat()} (checked at {at})")
    if at > cert.not_valid_after_utc:
        raise expired(f"{role} expired at {cert.not_valid_after_utc.isoformat()} (checked at {at})")


def _check_critical_extensions(cert: x509.Certificate) -> None:
    for extension in _extensions(cert):
        if extension.critical and extension.oid not in _HANDLED_EXTENSIONS:
            raise UnhandledCriticalExtensionError(
                f"{_describe(cert)} has critical extension {extension.oid.dotted_string} that is not processed here"
            )


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise MalformedCertificateError(f"{_describe(cert)} has malformed extensions: {exc}") from exc


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return _extensions(cert).get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
