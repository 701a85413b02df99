"""A service's identity: the trust bundle it verifies proofs and certificates against, its SVID, its TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

from atb_identity import Svid, TrustBundle, bundle_path, ensure_svid, load_svid
from atb_identity.tls import server_context

__all__ = ["MissingBundleError", "load_bundle", "server_tls", "service_svid"]


class MissingBundleError(FileNotFoundError):
    """No trust bundle where one was expected: the PKI was not set up."""


def load_bundle(configured: Path | None, state_dir: Path, trust_domain: str) -> TrustBundle:
    """The configured bundle (SPIRE writes one), else the dev CA's bundle in the state folder."""
    path = configured or bundle_path(state_dir)
    if not path.exists():
        raise MissingBundleError(
            f"no trust bundle at {path}: run `atb pki init` (dev) or set ATB_TRUST_BUNDLE_PATH to your SPIFFE bundle"
        )
    return TrustBundle.load(path, trust_domain)


def service_svid(state_dir: Path, service_id: str, cert_path: Path | None, key_path: Path | None) -> Svid:
    """A service's own SVID: the configured files (SPIRE writes them), else one from the dev CA."""
    if cert_path is not None and key_path is not None:
        return load_svid(cert_path, key_path)
    return ensure_svid(state_dir, service_id)


def server_tls(svid: Svid, configured_bundle: Path | None, state_dir: Path) -> ssl.SSLContext:
    """The mTLS server context of an HTTPS site: the service's SVID, client certificates checked against
    the configured bundle (else the dev CA's)."""
    if svid.cert_path is None or svid.key_path is None:
        raise ValueError(f"the SVID of {svid.spiffe_id} has no certificate and key files to serve TLS with")
    return server_context(svid.cert_path, svid.key_path, configured_bundle or bundle_path(state_dir))
