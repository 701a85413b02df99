"""C2SP tlog-checkpoint and signed-note text, formatted and parsed (no crypto).

A checkpoint body is three lines: the log's origin, the tree size in decimal,
the base64 root hash; optional extension lines follow. A signed note is the body,
a blank line, and one line per signature: `— <key name> <base64(key id || sig)>`.
The Ed25519 key id is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key)
(C2SP signed-note). The signature itself is made and checked in
`audit_sink.adapters.signing`; this module only does the text.

Purge records reuse the signed-note format with their own body (`PurgeRecord`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "ED25519_TYPE",
    "Checkpoint",
    "NoteError",
    "NoteSignature",
    "PurgeRecord",
    "SignedNote",
    "VerifierKey",
    "key_id",
]

ED25519_TYPE = 0x01
_NAME = re.compile(r"^[^\s+]+$")
_EM_DASH = "\u2014 "


class NoteError(ValueError):
    """A checkpoint, note or verifier key is malformed or not signed by the expected key."""


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_TYPE]) + public_key).digest()[:4]


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not base64") from exc


@dataclass(frozen=True)
class VerifierKey:
    """`<name>+<hex key id>+<base64(0x01 || Ed25519 public key)>`: all an outsider needs."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise NoteError(f"key name {self.name!r} must be non-empty without spaces or '+'")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)  # the base64 key may itself contain "+"
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<key id>+<key>")
        name, hex_id, encoded = parts
        raw = _b64(encoded, "verifier key")
        if not raw or raw[0] != ED25519_TYPE:
            raise NoteError("only Ed25519 verifier keys (type 0x01) are accepted")
        key = cls(name, raw[1:])
        if key.key_id.hex() != hex_id.lower():
            raise NoteError("verifier key id does not match its name and key")
        return key


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_EM_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class SignedNote:
    text: str
    """The signed text, ending in a newline."""
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)

    @classmethod
    def parse(cls, note: str) -> SignedNote:
        text, sep, sig_block = note.rpartition("\n\n")
        if not sep or not text:
            raise NoteError("a signed note is text, a blank line, then signature lines")
        signatures = tuple(_signature(line) for line in sig_block.split("\n")[:-1])
        if not sig_block.endswith("\n") or not signatures:
            raise NoteError("a signed note needs at least one signature line ending in a newline")
        return cls(text + "\n", signatures)

    def signature_by(self, key: VerifierKey) -> bytes:
        """The signature bytes made with `key`; NoteError if there is none."""
        for sig in self.signatures:
            if sig.name == key.name and sig.key_id == key.key_id:
                return sig.signature
        raise NoteError(f"note is not signed by {key.name} ({key.key_id.hex()})")


def _signature(line: str) -> NoteSignature:
    if not line.startswith(_EM_DASH):
        raise NoteError(f"signature line must start with an em dash: {line[:40]!r}")
    name, _, encoded = line[len(_EM_DASH) :].partition(" ")
    raw = _b64(encoded, "signature")
    if not name or len(raw) < 5:
        raise NoteError("signature line has no name or a truncated signature")
    return NoteSignature(name, raw[:4], raw[4:])


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or self.size < 0 or len(self.root) != 32:
            raise NoteError("a checkpoint needs an origin line, a size ≥ 0 and a 32-byte root")

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[1].isdigit():
            raise NoteError("a checkpoint is origin, size and root hash, one per line")
        if str(int(lines[1])) != lines[1]:
            raise NoteError("checkpoint size has leading zeros")
        return cls(lines[0], int(lines[1]), _b64(lines[2], "root hash"), tuple(lines[3:-1]))


@dataclass(frozen=True)
class PurgeRecord:
    """What one purge removed: the leaves whose rows went, and the tree they stay in.

    `digest` is SHA-256 over `<index> <leaf hash hex>\\n` of every purged leaf in
    index order, so the signed text stays small whatever the purge removed.
    `archived_end` / `archive_head`: set by a hot purge (docs/archive.md) — the first
    `archived_end` leaves were verified in the archive whose newest manifest has that
    SHA-256; rows below it may go before their `retain_until`. An extra line, so
    records without it keep their bytes.
    """

    origin: str
    purge_id: str
    purged_at: str
    tree_size: int
    root: bytes
    count: int
    digest: str
    archived_end: int | None = None
    archive_head: str | None = None

    def body(self) -> str:
        archived = f"archived {self.archived_end} {self.archive_head}\n" if self.archived_end is not None else ""
        return (
            f"{self.origin}\natb-audit-purge {self.purge_id}\n{self.purged_at}\n"
            f"{self.tree_size}\n{base64.b64encode(self.root).decode()}\n{self.count} {self.digest}\n{archived}"
        )

    @classmethod
    def parse(cls, text: str) -> PurgeRecord:
        lines = text.split("\n")
        if len(lines) not in (7, 8) or not lines[1].startswith("atb-audit-purge ") or lines[-1]:
            raise NoteError("not a purge record")
        count, _, digest = lines[5].partition(" ")
        if not lines[3].isdigit() or not count.isdigit():
            raise NoteError("purge record sizes must be decimal")
        root = _b64(lines[4], "root hash")
        archived_end, archive_head = None, None
        if len(lines) == 8:
            word, end, head = [*lines[6].split(" "), "", ""][:3]
            if word != "archived" or not end.isdigit() or not head:
                raise NoteError("a purge record's archive line is `archived <leaves> <manifest sha256>`")
            archived_end, archive_head = int(end), head
        return cls(
            lines[0],
            lines[1].split(" ", 1)[1],
            lines[2],
            int(lines[3]),
            root,
            int(count),
            digest,
            archived_end,
            archive_head,
        )

    @staticmethod
    def digest_of(leaves: list[tuple[int, bytes]]) -> str:
        h = hashlib.sha256()
        for index, leaf in sorted(leaves):
            h.update(f"{index} {leaf.hex()}\n".encode())
        return h.hexdigest()
