"""RFC 6962 / RFC 9162 Merkle trees: tree hash, inclusion and consistency proofs.

Leaf hash `SHA-256(0x00 || leaf)`, node hash `SHA-256(0x01 || left || right)`
(RFC 6962 §2.1). The tree over n leaves splits at k, the largest power of two
smaller than n. Verifiers here check every element of a proof and reject proofs
that are too long or too short (immudb CVE-2022-36111 checked only the ends).

`Frontier` is the right edge of a tree (one perfect subtree per set bit of n):
enough to append leaves and compute the root without holding every leaf.

Pure: hashing only, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "MerkleTree",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""RFC 6962 §2.1: the hash of an empty list is the hash of an empty string."""


class ProofError(ValueError):
    """A proof does not prove what it claims (wrong length, wrong element, wrong root)."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (RFC 6962 §2.1), iteratively via the frontier."""
    return Frontier.of(hashes).root()


class MerkleTree:
    """All perfect subtrees of a list of leaf hashes, so each proof costs O(log n) after O(n) once."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.size = len(hashes)
        self._levels: list[list[bytes]] = [list(hashes)]
        while len(self._levels[-1]) > 1:
            below = self._levels[-1]
            self._levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi)."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self._levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(m, D[n]) of RFC 6962 §2.1.1, leaf to root."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ProofError(f"leaf {index} is not in a tree of {size}")
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.subtree(lo, lo + k))
                lo = lo + k
        return path[::-1]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 6962 §2.1.2."""
        new_size = self.size if new_size is None else new_size
        if not 0 < old_size <= new_size <= self.size:
            raise ProofError(f"no consistency proof from size {old_size} to {new_size}")
        return self._subproof(old_size, 0, new_size, complete=True)

    def _subproof(self, m: int, lo: int, hi: int, *, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self.subtree(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, complete=complete), self.subtree(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, complete=False), self.subtree(lo, lo + k)]


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) for a one-off proof; build a `MerkleTree` for many."""
    return MerkleTree(hashes).inclusion_proof(index)


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for a one-off proof; build a `MerkleTree` for many."""
    return MerkleTree(hashes).consistency_proof(old_size)


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root a proof leads to (RFC 9162 §2.1.3.2); raises if the path has the wrong length."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside a tree of size {size}")
    fn, sn = index, size - 1
    result = leaf
    for element in path:
        if len(element) != 32:
            raise ProofError("proof element is not a SHA-256 hash")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return result


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """None if `leaf` (a leaf hash) is at `index` of the tree of `size` with `root`; raises ProofError otherwise."""
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the root of tree size {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: None if the tree of `new_size` extends the one of `old_size`; raises otherwise."""
    if old_size < 1 or old_size > new_size:
        raise ProofError(f"no consistency between sizes {old_size} and {new_size}")
    if any(len(p) != 32 for p in proof):
        raise ProofError("proof element is not a SHA-256 hash")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("same size, different roots: the log forked")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # old tree is a perfect subtree: its root starts the path
        path.insert(0, old_root)
    if not path:
        raise ProofError("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for element in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(element, fr)
            sr = node_hash(element, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")


@dataclass(frozen=True)
class Frontier:
    """The perfect subtrees on the right edge of a tree of `size` leaves, largest first."""

    size: int = 0
    peaks: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, hashes: Sequence[bytes]) -> Frontier:
        return cls().extend(hashes)

    def extend(self, hashes: Sequence[bytes]) -> Frontier:
        peaks = list(self.peaks)
        size = self.size
        for h in hashes:
            peaks.append(h)
            size += 1
            # merge equal-height subtrees: one merge per trailing zero bit of the new size
            bits = size
            while bits & 1 == 0:
                right = peaks.pop()
                peaks[-1] = node_hash(peaks[-1], right)
                bits >>= 1
        return Frontier(size, tuple(peaks))

    def root(self) -> bytes:
        if not self.peaks:
            return EMPTY_ROOT
        result = self.peaks[-1]
        for peak in reversed(self.peaks[:-1]):
            result = node_hash(peak, result)
        return result
