"""Recompute the audit store and check it against its signed checkpoints.

Input is a snapshot of the store as the database returned it (leaves, rows,
tombstones, checkpoints and purge records whose signatures the caller already
checked with the public key). Output is an `AuditReport` naming every problem:
a changed byte (leaf hash differs), a deleted row (a leaf without its row and
without a valid tombstone), an inserted row (a row without its leaf), reordered
rows (leaf order differs from insertion order), a truncated store (a checkpoint
larger than the store), a tree that no longer matches a signed root, two
checkpoints that are not consistent, and two of the same size that differ (a
fork). It never stops at the first problem, and it never raises on bad data.

Pure: hashing only.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from audit_sink.domain.anchors import Anchor
from audit_sink.domain.checkpoint import Checkpoint, PurgeRecord
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import Frontier, MerkleTree, ProofError, leaf_hash, verify_consistency
from audit_sink.domain.redaction import (
    RedactionEntry,
    committed_leaf,
    entries_by_leaf,
    is_redaction_record,
    redaction_problem,
)
from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import as_utc, parse_time
from audit_sink.domain.tokens import audit_name

__all__ = ["AuditReport", "LeafEntry", "StoreSnapshot", "Tombstone", "audit_report"]

Position = tuple[str, int, int]
_MAX_LISTED = 50


@dataclass(frozen=True)
class LeafEntry:
    index: int
    position: Position
    hash: bytes


@dataclass(frozen=True)
class Tombstone:
    index: int
    leaf: bytes
    purge_id: str


@dataclass(frozen=True)
class StoreSnapshot:
    leaves: Sequence[LeafEntry]
    rows: Sequence[tuple[int, AuditRow]]
    """(seq, row) in insertion order."""
    tombstones: Sequence[Tombstone]
    checkpoints: Sequence[Checkpoint]
    """Checkpoints whose signatures were verified, in the order they were made."""
    purges: Sequence[PurgeRecord]
    """Purge records whose signatures were verified."""
    origin: str


@dataclass(frozen=True)
class AuditReport:
    leaves: int
    rows: int
    purged: int
    checkpoints: int
    latest: Checkpoint | None
    uncovered: int
    """Leaves appended after the latest checkpoint (not yet protected by a signature)."""
    problems: tuple[str, ...]
    anchors: tuple[Anchor, ...] = ()
    """Checkpoints from outside the store it was checked against (witnessed, trusted, announced)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def audit_report(snapshot: StoreSnapshot, extra_problems: Sequence[str] = ()) -> AuditReport:
    problems = list(extra_problems)
    leaves = list(snapshot.leaves)
    problems += _leaf_sequence(leaves)
    by_position = {leaf.position: leaf for leaf in leaves}
    present = _rows(snapshot.rows, by_position, problems)
    purged = _tombstones(snapshot, leaves, present, problems)
    for leaf in leaves:
        if leaf.index not in present and leaf.index not in purged:
            problems.append(f"row of leaf {leaf.index} at {_where(leaf.position)} is missing (deleted)")
    problems += _checkpoints(snapshot, [leaf.hash for leaf in leaves])
    latest = max(snapshot.checkpoints, key=lambda c: c.size, default=None)
    if latest is None:
        problems.append("no signed checkpoint: nothing proves the store was not rewritten")
    return AuditReport(
        leaves=len(leaves),
        rows=len(snapshot.rows),
        purged=len(purged),
        checkpoints=len(snapshot.checkpoints),
        latest=latest,
        uncovered=len(leaves) - (latest.size if latest else 0),
        problems=tuple(_capped(problems)),
    )


def _where(position: Position) -> str:
    topic, partition, offset = position
    return f"{topic}/{partition}@{offset}"


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= _MAX_LISTED:
        return problems
    return [*problems[:_MAX_LISTED], f"... and {len(problems) - _MAX_LISTED} more problems"]


def _leaf_sequence(leaves: Sequence[LeafEntry]) -> list[str]:
    for expected, leaf in enumerate(leaves):
        if leaf.index != expected:
            return [f"leaf table is not contiguous: index {leaf.index} where {expected} was expected"]
    return []


def _rows(
    rows: Sequence[tuple[int, AuditRow]], by_position: dict[Position, LeafEntry], problems: list[str]
) -> set[int]:
    present: set[int] = set()
    previous = -1
    redactions = _redactions(rows, by_position, problems)
    for seq, row in rows:
        position = (row.topic, row.partition, row.offset)
        leaf = by_position.get(position)
        if leaf is None:
            problems.append(f"row {seq} ({row.event_id}) at {_where(position)} has no leaf (inserted)")
            continue
        if leaf.index in present:
            problems.append(f"row {seq} duplicates the position of leaf {leaf.index}")
            continue
        present.add(leaf.index)
        entry = redactions.get(leaf.index)
        if entry is not None:
            # Redacted after its leaf was signed: the leaf commits to the original bytes' digest,
            # the redaction record (a later leaf) to the bytes stored now.
            if reason := redaction_problem(row, entry):
                problems.append(f"row {seq} ({row.event_id}) at {_where(position)} was altered: {reason}")
            expected = committed_leaf(row, entry)
        else:
            expected = leaf_bytes(row)
        if leaf_hash(expected) != leaf.hash:
            problems.append(f"row {seq} ({row.event_id}) at {_where(position)} was altered: leaf hash differs")
        if row.audit_type != audit_name(row.event_type, row.raw):
            problems.append(f"row {seq} ({row.event_id}) at {_where(position)}: audit_type differs from its bytes")
        if leaf.index < previous:
            problems.append(f"row {seq} ({row.event_id}) is out of order: leaf {leaf.index} after leaf {previous}")
        previous = max(previous, leaf.index)
    return present


def _redactions(
    rows: Sequence[tuple[int, AuditRow]], by_position: dict[Position, LeafEntry], problems: list[str]
) -> dict[int, RedactionEntry]:
    """The redaction entries of the stored redaction records, by the leaf they redact."""
    records = {
        leaf.index: row.raw
        for _, row in rows
        if is_redaction_record(row) and (leaf := by_position.get((row.topic, row.partition, row.offset)))
    }
    entries, found = entries_by_leaf(records)
    problems += found
    return entries


def _tombstones(
    snapshot: StoreSnapshot, leaves: Sequence[LeafEntry], present: set[int], problems: list[str]
) -> set[int]:
    purges = {p.purge_id: p for p in snapshot.purges}
    purged: set[int] = set()
    by_purge: dict[str, list[tuple[int, bytes]]] = {}
    for stone in snapshot.tombstones:
        purge = purges.get(stone.purge_id)
        if not 0 <= stone.index < len(leaves) or purge is None:
            problems.append(f"tombstone of leaf {stone.index} has no signed purge record {stone.purge_id!r}")
            continue
        leaf = leaves[stone.index]
        if leaf_hash(stone.leaf) != leaf.hash:
            problems.append(f"tombstone of leaf {stone.index} does not match the leaf hash")
            continue
        if stone.index in present:
            problems.append(f"leaf {stone.index} is both stored and purged")
        archived = purge.archived_end is not None and stone.index < purge.archived_end
        reason = "" if archived else _not_expired(stone.leaf, purge.purged_at)  # hot retention: docs/archive.md
        if reason:
            problems.append(f"leaf {stone.index} was purged before its retention ended: {reason}")
        purged.add(stone.index)
        by_purge.setdefault(stone.purge_id, []).append((stone.index, leaf.hash))
    for purge_id, purge in purges.items():
        removed = by_purge.get(purge_id, [])
        if len(removed) != purge.count or PurgeRecord.digest_of(removed) != purge.digest:
            problems.append(f"tombstones of purge {purge_id} differ from its signed record ({purge.count} leaves)")
    return purged


def _not_expired(leaf: bytes, purged_at: str) -> str:
    try:
        fields = json.loads(leaf)
        retain_until: datetime = parse_time(fields["retain_until"])
        when = as_utc(datetime.fromisoformat(purged_at))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return f"unreadable tombstone ({exc})"
    return "" if retain_until < when else f"retain_until {fields['retain_until']} ≥ purge time {purged_at}"


def _checkpoints(snapshot: StoreSnapshot, hashes: Sequence[bytes]) -> list[str]:
    problems: list[str] = []
    roots = _roots_at(hashes, {c.size for c in snapshot.checkpoints if c.size <= len(hashes)})
    for cp in snapshot.checkpoints:
        if cp.origin != snapshot.origin:
            problems.append(f"checkpoint of size {cp.size} is for origin {cp.origin!r}, not {snapshot.origin!r}")
        elif cp.size > len(hashes):
            problems.append(f"checkpoint of size {cp.size} but the store has {len(hashes)} leaves (truncated)")
        elif roots[cp.size] != cp.root:
            problems.append(f"store does not match the signed root of checkpoint size {cp.size}")
    problems += _consistency(snapshot.checkpoints, hashes)
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


def _consistency(checkpoints: Sequence[Checkpoint], hashes: Sequence[bytes]) -> list[str]:
    """Successive checkpoints (by size) must extend each other; equal sizes must agree (else a fork)."""
    problems: list[str] = []
    ordered = sorted({(c.size, c.root) for c in checkpoints})
    tree = MerkleTree(hashes)
    for (old_size, old_root), (new_size, new_root) in itertools.pairwise(ordered):
        if old_size == new_size:
            problems.append(
                f"fork: two signed checkpoints of size {old_size} with different roots "
                f"({_short(old_root)} and {_short(new_root)})"
            )
            continue
        if old_size == 0 or new_size > len(hashes):
            continue  # an empty tree is consistent with anything; a truncation is reported above
        try:
            proof = tree.consistency_proof(old_size, new_size)
            verify_consistency(old_size, new_size, old_root, new_root, proof)
        except ProofError as exc:
            problems.append(f"checkpoints {old_size} → {new_size} are not consistent: {exc}")
    return problems


def _short(root: bytes) -> str:
    return root.hex()[:16]
