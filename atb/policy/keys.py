"""The key that signs policy bundles, and the public key OPA verifies them with.

OPA verifies a bundle's `.signatures.json` (a JWT over every file's SHA-256) with
the key its configuration names (`bundles.<name>.signing.keyid` → `keys.<id>`).
The pinned OPA signs and verifies RS*, PS*, ES* and HS*; it has no EdDSA, so ATB signs
with ES256 (an EC P-256 key) or RS256 (an RSA key of at least 2048 bits), chosen
from the key itself.

Development: the first `atb policy build` without `--signing-key` generates an
EC P-256 key into the state folder (`<state>/policy/signing-key.pem`, mode 0600,
git-ignored with the rest of `.state/`). Production keeps its key elsewhere (a
secret store, a CI secret) and passes it with `--signing-key` or
`ATB_POLICY_SIGNING_KEY`; the repository never holds a key (docs/policy.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from atb.dev.config import DevConfig
from atb.policy.errors import PolicyBundleUsageError
from atb_runtime.files import create_once

__all__ = [
    "DEFAULT_KEY_ID",
    "SIGNING_KEY_ENV",
    "BundleSigningKey",
    "dev_key_path",
    "ensure_dev_key",
    "load_signing_key",
    "resolve_signing_key",
]

DEFAULT_KEY_ID = "atb-policy"
"""The key id OPA's configuration names (`signing.keyid`) and the signature's `kid` header carries."""

SIGNING_KEY_ENV = "ATB_POLICY_SIGNING_KEY"
_MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class BundleSigningKey:
    """A private key file OPA can sign with, its algorithm and its public half (PEM)."""

    path: Path
    algorithm: str
    public_pem: str


def dev_key_path(config: DevConfig) -> Path:
    """`<state>/policy/signing-key.pem`: the development signing key (never committed)."""
    return config.state_dir / "policy" / "signing-key.pem"


def ensure_dev_key(path: Path) -> Path:
    """Generate an EC P-256 key at `path` (mode 0600) unless one is there; returns the path."""
    create_once(
        path,
        lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        dir_mode=0o755,
    )
    return path


def load_signing_key(path: Path) -> BundleSigningKey:
    """Read a PEM private key and pick its algorithm: EC P-256 → ES256, RSA ≥ 2048 bits → RS256."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyBundleUsageError(f"cannot read the signing key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PolicyBundleUsageError(f"{path} is not an unencrypted PEM private key (EC P-256 or RSA): {exc}") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = "ES256"
    elif isinstance(key, rsa.RSAPrivateKey) and key.key_size >= _MIN_RSA_BITS:
        algorithm = "RS256"
    else:
        raise PolicyBundleUsageError(
            f"{path}: OPA bundles are signed here with EC P-256 (ES256) or RSA of at least {_MIN_RSA_BITS} bits "
            "(RS256); OPA has no EdDSA"
        )
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return BundleSigningKey(path=path, algorithm=algorithm, public_pem=public_pem)


def resolve_signing_key(given: Path | None, config: DevConfig) -> BundleSigningKey:
    """`--signing-key`, else `ATB_POLICY_SIGNING_KEY`, else the development key (generated on first use)."""
    if given is None:
        env = os.environ.get(SIGNING_KEY_ENV, "").strip()
        given = Path(env).expanduser() if env else None
    if given is None:
        given = ensure_dev_key(dev_key_path(config))
    return load_signing_key(given)
