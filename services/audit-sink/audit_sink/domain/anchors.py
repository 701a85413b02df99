"""Checkpoints from outside the store, and what the store must be to agree with them.

The store's own checkpoints can be deleted with the rows they cover: a store
rolled back to an earlier checkpoint verifies by itself. An *anchor* is a
checkpoint the verifier got elsewhere: cosigned by enough of the witnesses it
trusts, given as a trusted file, or announced on `atb.audit`. The store must hold
at least that many leaves (else it was rolled back) and its first `size` leaves
must have that root (else history was rewritten or forked).

Pure: hashing only; signatures are checked by the caller. docs/audit.md,
"Witnessed checkpoints".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.merkle import Frontier

__all__ = ["Anchor", "anchor_problems", "witnessed"]


@dataclass(frozen=True)
class Anchor:
    checkpoint: Checkpoint
    source: str
    """Who vouches for it, as a problem names it: `checkpoint cosigned by W at T`, `trusted checkpoint F`, ..."""


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def witnessed(
    cosigned: Mapping[Checkpoint, Mapping[str, int]], threshold: int
) -> tuple[list[Anchor], Checkpoint | None]:
    """Anchors for checkpoints cosigned by at least `threshold` distinct witnesses ({name: timestamp}),
    and the largest one that has fewer (to say what is missing)."""
    anchors, short = [], None
    for checkpoint, witnesses in cosigned.items():
        if len(witnesses) >= threshold:
            names = ", ".join(sorted(witnesses))
            anchors.append(Anchor(checkpoint, f"checkpoint cosigned by {names} at {_when(max(witnesses.values()))}"))
        elif short is None or checkpoint.size > short.size:
            short = checkpoint
    return sorted(anchors, key=lambda a: a.checkpoint.size), short


def anchor_problems(hashes: Sequence[bytes], origin: str, anchors: Iterable[Anchor]) -> list[str]:
    """What is wrong with a store of leaf `hashes` given checkpoints vouched for outside it."""
    problems: list[str] = []
    listed = sorted(set(anchors), key=lambda a: (a.checkpoint.size, a.source))
    roots = _roots_at(hashes, {a.checkpoint.size for a in listed if a.checkpoint.size <= len(hashes)})
    for anchor in listed:
        cp = anchor.checkpoint
        if cp.origin != origin:
            problems.append(f"{anchor.source} is for origin {cp.origin!r}, not {origin!r}")
        elif cp.size > len(hashes):
            problems.append(
                f"rollback: store has {len(hashes)} leaves; {anchor.source} commits to {cp.size} > {len(hashes)}"
            )
        elif roots[cp.size] != cp.root:
            problems.append(
                f"history rewritten: the store's first {cp.size} leaves do not have the root of {anchor.source}"
                f" (size {cp.size}): the store is inconsistent with it"
            )
    return problems


def _roots_at(hashes: Sequence[bytes], sizes: set[int]) -> dict[int, bytes]:
    roots: dict[int, bytes] = {}
    frontier = Frontier()
    if 0 in sizes:
        roots[0] = frontier.root()
    for h in hashes:
        frontier = frontier.extend([h])
        if frontier.size in sizes:
            roots[frontier.size] = frontier.root()
    return roots
