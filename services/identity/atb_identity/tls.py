"""TLS contexts for mutual authentication with SPIFFE X.509-SVIDs.

OpenSSL checks the chain to the trust bundle and the validity period during the
handshake; SPIFFE's own rules (one URI SAN, trust domain, key usage, ...) are
checked on the peer certificate afterwards by `atb_identity.validate_svid`, so a
refusal there gets a JSON error and an audit event instead of a bare TLS alert.
Client certificates are optional at the TLS layer for the same reason: a missing
certificate becomes an HTTP 401 the agent can read.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from atb_identity.errors import IdentityError
from atb_identity.spiffe import SpiffeId
from atb_identity.svid import TrustBundle, validate_svid

__all__ = ["client_context", "peer_certificate", "peer_identity", "server_context"]


def server_context(cert_path: Path, key_path: Path, bundle_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    context.load_verify_locations(cafile=str(bundle_path))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(
    cert_path: Path, key_path: Path, bundle_path: Path, *, expect_server: str | None = None
) -> ssl.SSLContext:
    """A client context presenting an SVID.

    With `expect_server`, every connection made with this context checks, right
    after its handshake, that the server's certificate is a valid SVID of exactly
    that SPIFFE ID (the role hostname checking plays on the web).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    context.load_verify_locations(cafile=str(bundle_path))
    # NOTE: SVIDs carry a URI SAN, not a DNS name, so hostname checking cannot
    # apply; the peer's SPIFFE ID is validated with `peer_identity` instead.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if expect_server is not None:
        bundle = TrustBundle.load(bundle_path, SpiffeId.parse(expect_server).trust_domain)
        context.sslobject_class = _server_checking(bundle, expect_server)
    return context


def _server_checking(bundle: TrustBundle, expected: str) -> type[ssl.SSLObject]:
    class _CheckedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()  # raises SSLWantReadError until the handshake is complete
            cert = peer_certificate(self)
            if cert is None:
                raise ssl.SSLError("server presented no certificate")
            try:
                server = peer_identity(cert, bundle)
            except IdentityError as exc:
                raise ssl.SSLError(f"server certificate refused: {exc}") from exc
            if str(server) != expected:
                raise ssl.SSLError(f"server is {server}, not {expected}")

    return _CheckedSSLObject


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def peer_identity(cert: x509.Certificate, bundle: TrustBundle) -> SpiffeId:
    """The SPIFFE ID of a peer certificate, or a named IdentityError saying which rule failed.

    Only the leaf is available from Python's ssl module; it must chain directly to
    a bundle root (the dev CA issues leaves directly; see the README for SPIRE).
    """
    return validate_svid([cert], bundle, at=datetime.now(UTC))
