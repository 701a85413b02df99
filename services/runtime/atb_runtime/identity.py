"""Load the trust bundle a service verifies proofs and certificates against."""

from __future__ import annotations

from pathlib import Path

from atb_identity import Svid, TrustBundle, bundle_path, ensure_svid, load_svid

__all__ = ["MissingBundleError", "load_bundle", "service_svid"]


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
