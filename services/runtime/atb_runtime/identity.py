"""Load the trust bundle a service verifies proofs and certificates against."""

from __future__ import annotations

from pathlib import Path

from atb_identity import TrustBundle, bundle_path

__all__ = ["MissingBundleError", "load_bundle"]


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
