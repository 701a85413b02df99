"""Ed25519 keys and signatures for checkpoints and purge records (C2SP signed-note).

The private key lives in a PEM file (mode 0600), created on first use; the
verifier key (`<name>+<key id>+<base64 key>`, all an outsider needs) is written
next to it as `<file>.pub`. Verification takes only a `VerifierKey`: nothing in
the store or in a bundle is trusted to say which key is right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from atb_runtime.files import create_once, write_atomically
from audit_sink.domain.checkpoint import NoteError, NoteSignature, SignedNote, VerifierKey
from audit_sink.domain.cosignature import Cosignature, CosignerKey, cosignatures_by, cosigned_message

__all__ = [
    "NoteSigner",
    "load_cosigner_key",
    "load_or_create_signer",
    "load_verifier",
    "verify_cosignature",
    "verify_note",
]


@dataclass(frozen=True)
class NoteSigner:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> VerifierKey:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return VerifierKey(self.name, raw)

    def sign(self, text: str) -> SignedNote:
        key = self.verifier
        signature = self.private_key.sign(text.encode())
        return SignedNote(text, (NoteSignature(key.name, key.key_id, signature),))


def load_or_create_signer(path: Path, name: str) -> NoteSigner:
    """The signing key at `path` (created, 0600, with `<path>.pub` holding the verifier key)."""
    key = serialization.load_pem_private_key(create_once(path, _new_pem, dir_mode=0o755), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError(f"{path} is not an Ed25519 private key")
    signer = NoteSigner(name, key)
    pub = path.with_name(path.name + ".pub")
    if not pub.exists() or pub.read_text().strip() != str(signer.verifier):
        write_atomically(pub, (str(signer.verifier) + "\n").encode())
    return signer


def _new_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_verifier(text_or_path: str) -> VerifierKey:
    """A verifier key given inline or as a file holding one."""
    candidate = Path(text_or_path)
    text = candidate.read_text() if "+" not in text_or_path and candidate.exists() else text_or_path
    return VerifierKey.parse(text)


def verify_note(note: str, key: VerifierKey) -> SignedNote:
    """The parsed note if `key` signed it; NoteError otherwise."""
    parsed = SignedNote.parse(note)
    signature = parsed.signature_by(key)
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, parsed.text.encode())
    except InvalidSignature as exc:
        raise NoteError(f"bad signature by {key.name} on note {parsed.text.splitlines()[0:2]}") from exc
    return parsed


def load_cosigner_key(text_or_path: str) -> CosignerKey:
    """A witness's vkey given inline or as a file holding one."""
    candidate = Path(text_or_path)
    text = candidate.read_text() if "+" not in text_or_path and candidate.exists() else text_or_path
    return CosignerKey.parse(text)


def verify_cosignature(note: SignedNote, key: CosignerKey) -> Cosignature:
    """The newest valid `cosignature/v1` of `key` on the note's checkpoint; NoteError if none verifies."""
    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    valid = []
    for cosig in cosignatures_by(note, key):
        try:
            public.verify(cosig.signature, cosigned_message(note.text, cosig.timestamp))
        except InvalidSignature:
            continue
        valid.append(cosig)
    if not valid:
        raise NoteError(f"note {note.text.splitlines()[0:2]} carries no valid cosignature by {key.name}")
    return max(valid, key=lambda c: c.timestamp)
