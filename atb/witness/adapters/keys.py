"""The witness's Ed25519 key (PEM, 0600, in its own state folder, created on first use) and its cosignatures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atb_runtime.files import create_once, write_atomically
from audit_sink.domain.checkpoint import NoteError
from audit_sink.domain.cosignature import Cosignature, CosignerKey, cosigned_message

__all__ = ["Cosigner", "load_or_create_cosigner"]


@dataclass(frozen=True)
class Cosigner:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def key(self) -> CosignerKey:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return CosignerKey(self.name, raw)

    def cosign(self, body: str, timestamp: int) -> Cosignature:
        """A `cosignature/v1` on the checkpoint `body` at `timestamp` (POSIX seconds)."""
        signature = self.private_key.sign(cosigned_message(body, timestamp))
        return Cosignature(self.name, self.key.key_id, timestamp, signature)


def load_or_create_cosigner(path: Path, name: str) -> Cosigner:
    """The key at `path`, created (0600, its folder 0700) if missing; `<path>.pub` holds the vkey."""
    key = serialization.load_pem_private_key(create_once(path, _new_pem), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError(f"{path} is not an Ed25519 private key")
    cosigner = Cosigner(name, key)
    pub = path.with_name(path.name + ".pub")
    if not pub.exists() or pub.read_text().strip() != str(cosigner.key):
        write_atomically(pub, (str(cosigner.key) + "\n").encode())
    return cosigner


def _new_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
