"""C2SP tlog-cosignature (Ed25519, `cosignature/v1`) and the tlog-witness request, as text (no crypto).

A witness's cosignature is one more signature line on the log's checkpoint note:
`— <witness name> <base64(key id || 8-byte big-endian timestamp || Ed25519 signature)>`,
where the key id is SHA-256(name || 0x0A || 0x04 || public key)[:4] and the signed
message is `cosignature/v1\\ntime <timestamp>\\n` followed by the checkpoint body
(extension lines included). Its vkey is `<name>+<hex key id>+<base64(0x04 || key)>`.

An add-checkpoint request body (C2SP tlog-witness) is `old <size>`, up to 63
base64 consistency-proof lines, an empty line, then the signed checkpoint note. A
409 answer carries the witness's recorded size as `<decimal>\\n`
(`text/x.tlog.size`).

The signatures are made and checked in `audit_sink.adapters.signing`; this module
only does the text. docs/audit.md, "Witnessed checkpoints".
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from audit_sink.domain.checkpoint import NoteError, NoteSignature, SignedNote, _b64

__all__ = [
    "COSIGNATURE_TYPE",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Cosignature",
    "CosignerKey",
    "cosignature_line",
    "cosignatures_by",
    "cosigned_message",
    "parse_size",
]

COSIGNATURE_TYPE = 0x04
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_NAME = re.compile(r"^[^\s+]+$")
_DECIMAL = re.compile(r"^(0|[1-9][0-9]{0,18})$")


def _key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([COSIGNATURE_TYPE]) + public_key).digest()[:4]


@dataclass(frozen=True)
class CosignerKey:
    """A witness's verifier key: `<name>+<hex key id>+<base64(0x04 || Ed25519 public key)>`."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise NoteError(f"witness name {self.name!r} must be non-empty without spaces or '+'")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.public_key)

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([COSIGNATURE_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> CosignerKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a witness key is <name>+<key id>+<key>")
        name, hex_id, encoded = parts
        raw = _b64(encoded, "witness key")
        if not raw or raw[0] != COSIGNATURE_TYPE:
            raise NoteError("a witness key is an Ed25519 cosignature/v1 key (type 0x04)")
        key = cls(name, raw[1:])
        if key.key_id.hex() != hex_id.lower():
            raise NoteError("witness key id does not match its name and key")
        return key


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a `cosignature/v1` signature signs: header, time line, the whole checkpoint body."""
    if not 0 <= timestamp < 2**63:
        raise NoteError("a cosignature timestamp is 0 ≤ t < 2^63")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class Cosignature:
    witness: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def line(self) -> NoteSignature:
        return NoteSignature(self.witness, self.key_id, self.timestamp.to_bytes(8, "big") + self.signature)


def cosignature_line(witness: str, key_id: bytes, timestamp: int, signature: bytes) -> str:
    return Cosignature(witness, key_id, timestamp, signature).line().line()


def cosignatures_by(note: SignedNote, key: CosignerKey) -> list[Cosignature]:
    """The cosignature lines `key` may have made (name and key id match; signature not yet checked)."""
    found = []
    for sig in note.signatures:
        if sig.name == key.name and sig.key_id == key.key_id and len(sig.signature) == 8 + 64:
            stamp = int.from_bytes(sig.signature[:8], "big")
            if stamp < 2**63:
                found.append(Cosignature(sig.name, sig.key_id, stamp, sig.signature[8:]))
    return found


def parse_size(text: str) -> int:
    """A `text/x.tlog.size` body: a decimal size and a newline."""
    value = text[:-1] if text.endswith("\n") else text
    if not _DECIMAL.fullmatch(value):
        raise NoteError(f"not a tree size: {text[:40]!r}")
    return int(value)


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request: the size the client believes the witness has, a proof from it, the note."""

    old: int
    proof: tuple[bytes, ...]
    note: str

    def render(self) -> str:
        lines = [f"old {self.old}", *(base64.b64encode(p).decode() for p in self.proof)]
        return "\n".join(lines) + "\n\n" + self.note

    @classmethod
    def parse(cls, body: str) -> AddCheckpoint:
        head, sep, note = body.partition("\n\n")
        if not sep:
            raise NoteError("an add-checkpoint body is `old <size>`, proof lines, an empty line, a checkpoint")
        lines = head.split("\n")
        if not lines[0].startswith("old ") or not _DECIMAL.fullmatch(lines[0][4:]):
            raise NoteError("the first line must be `old <size>` (decimal, no leading zeros)")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise NoteError(f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof = tuple(_b64(line, "consistency proof line") for line in lines[1:])
        if any(len(p) != 32 for p in proof):
            raise NoteError("a consistency proof line is one base64 SHA-256 hash")
        return cls(int(lines[0][4:]), proof, note)
