"""Ed25519 signing keys: generated on first use into the state folder (0600), or read.

The `kid` is the RFC 7638 JWK thumbprint of the public key, so any verifier can
recompute it. Private keys never leave this module except as key objects.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from atb_runtime.files import create_once
from contracts import canonical_json

__all__ = ["SigningKey", "jwk_of", "load_key", "load_or_create_key", "thumbprint"]

log = logging.getLogger(__name__)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_of(public: Ed25519PublicKey) -> dict[str, str]:
    """The public JWK (RFC 8037 OKP)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace."""
    required = {name: jwk[name] for name in ("crv", "kty", "x")}
    return _b64url(hashlib.sha256(canonical_json(required)).digest())


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    kid: str
    jwk: dict[str, str]


def load_or_create_key(path: Path) -> SigningKey:
    """Load the PEM key at `path`, creating it (mode 0600) on first use."""
    return _key_at(path, create_once(path, _new_pem))


def load_key(path: Path) -> SigningKey:
    """Load the PEM key at `path`, which must exist (a key a keyring's index names is never made up)."""
    return _key_at(path, path.read_bytes())


def _key_at(path: Path, pem: bytes) -> SigningKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o022:
        raise PermissionError(f"{path} is writable by others (mode {mode:o}): refusing to sign with it")
    if mode & 0o044:
        log.warning("signing key %s is readable by group/others (mode %o); chmod 600 it", path, mode)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    jwk = {**jwk_of(key.public_key()), "alg": "EdDSA", "use": "sig"}
    return SigningKey(private=key, kid=thumbprint(jwk), jwk={**jwk, "kid": thumbprint(jwk)})


def _new_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
