"""audit_sink.domain.merkle: RFC 6962 tree hash, inclusion and consistency proofs, checked element by element."""

from __future__ import annotations

import base64
import hashlib

import pytest

from audit_sink.domain.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

SIZES = [*range(1, 34), 63, 64, 65, 100, 127, 128, 129]


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"leaf-{i}".encode()) for i in range(n)]


def _reference_root(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, recursively, as written in the RFC."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(_reference_root(hashes[:k]), _reference_root(hashes[k:]))


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert tree_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_known_vector_from_rfc6962_test_data() -> None:
    # certificate-transparency-go's testdata: the root of the 8 leaves
    # "", 00, 10, 2021, 3031, 40414243, 5051525354555657, 606162636465666768696a6b6c6d6e6f.
    leaves = [
        bytes.fromhex(x)
        for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
    ]
    root = tree_root([leaf_hash(x) for x in leaves])
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert base64.b64encode(root)


@pytest.mark.parametrize("n", SIZES)
def test_root_matches_the_rfc_definition_and_the_frontier(n: int) -> None:
    hashes = _leaves(n)
    assert tree_root(hashes) == _reference_root(hashes) == MerkleTree(hashes).root()
    frontier = Frontier()
    for h in hashes:  # one at a time, as the sink appends
        frontier = frontier.extend([h])
    assert frontier.root() == _reference_root(hashes)


@pytest.mark.parametrize("n", SIZES)
def test_every_inclusion_proof_verifies_and_every_altered_element_fails(n: int) -> None:
    hashes = _leaves(n)
    root = tree_root(hashes)
    tree = MerkleTree(hashes)
    for index in range(n):
        path = tree.inclusion_proof(index)
        assert path == inclusion_proof(index, hashes)
        verify_inclusion(index, n, hashes[index], path, root)
        for position in range(len(path)):
            forged = list(path)
            forged[position] = bytes([forged[position][0] ^ 1]) + forged[position][1:]
            with pytest.raises(ProofError):
                verify_inclusion(index, n, hashes[index], forged, root)
        with pytest.raises(ProofError):
            verify_inclusion(index, n, hashes[(index + 1) % n] if n > 1 else b"x" * 32, path, root)
        with pytest.raises(ProofError):
            verify_inclusion(index, n, hashes[index], [*path, root], root)  # too long
        if path:
            with pytest.raises(ProofError):
                verify_inclusion(index, n, hashes[index], path[:-1], root)  # too short


@pytest.mark.parametrize("new", [2, 3, 7, 8, 9, 16, 31, 33, 64, 65, 100])
def test_every_consistency_proof_verifies_and_every_altered_element_fails(new: int) -> None:
    hashes = _leaves(new)
    new_root = tree_root(hashes)
    for old in range(1, new + 1):
        old_root = tree_root(hashes[:old])
        proof = consistency_proof(old, hashes)
        verify_consistency(old, new, old_root, new_root, proof)
        for position in range(len(proof)):
            forged = list(proof)
            forged[position] = hashlib.sha256(forged[position]).digest()
            with pytest.raises(ProofError):
                verify_consistency(old, new, old_root, new_root, forged)
        if old < new:
            with pytest.raises(ProofError):
                verify_consistency(old, new, tree_root(_leaves(old + 1)[1:]), new_root, proof)
            with pytest.raises(ProofError):
                verify_consistency(old, new, old_root, new_root, proof[:-1])


def test_same_size_different_roots_is_a_fork() -> None:
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(5, 5, tree_root(_leaves(5)), tree_root(_leaves(6)[1:]), [])


@pytest.mark.parametrize(("index", "size"), [(-1, 4), (4, 4), (0, 0)])
def test_inclusion_outside_the_tree_is_refused(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(index, size, b"x" * 32, [], b"y" * 32)
