"""What a witness cosigns (C2SP tlog-witness `add-checkpoint`), decided without I/O.

The caller has parsed the request, found the log's keys for the checkpoint's
origin (else 404) and checked the log's signature (else 403). What is left is
the append-only rule against the latest checkpoint this witness cosigned for
that origin: `old` must be its size (else 409 with that size), a checkpoint of
the same size must have the same root (else 409: a fork), and the consistency
proof must lead from the recorded root to the new one (else 422). A checkpoint
smaller than `old` is a bad request (400). Anything else is cosigned and becomes
the new record.

Pure: hashing only.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.cosignature import SIZE_CONTENT_TYPE, AddCheckpoint
from audit_sink.domain.merkle import ProofError, verify_consistency

__all__ = ["Recorded", "Verdict", "judge"]


@dataclass(frozen=True)
class Recorded:
    """The latest checkpoint a witness cosigned for one origin."""

    size: int
    root: bytes


@dataclass(frozen=True)
class Verdict:
    status: int
    body: str
    content_type: str = "text/plain"

    @property
    def cosign(self) -> bool:
        return self.status == 200


def _refused(status: int, why: str) -> Verdict:
    return Verdict(status, why + "\n")


def judge(request: AddCheckpoint, checkpoint: Checkpoint, recorded: Recorded | None) -> Verdict:
    """Whether to cosign `checkpoint`, whose log signature has been verified; 200 means yes."""
    if request.old > checkpoint.size:
        return _refused(400, f"old size {request.old} is larger than the checkpoint's size {checkpoint.size}")
    known = recorded.size if recorded is not None else 0
    if request.old != known:
        return Verdict(409, f"{known}\n", SIZE_CONTENT_TYPE)
    if recorded is None or request.old == 0:
        if request.proof:
            return _refused(422, "the consistency proof from size 0 must be empty")
        return Verdict(200, "")
    if checkpoint.size == recorded.size:
        if request.proof:
            return _refused(422, "the consistency proof between equal sizes must be empty")
        if checkpoint.root != recorded.root:
            return _refused(409, f"fork: a checkpoint of size {recorded.size} with another root was cosigned")
        return Verdict(200, "")
    try:
        verify_consistency(recorded.size, checkpoint.size, recorded.root, checkpoint.root, request.proof)
    except ProofError as exc:
        return _refused(422, f"not consistent with the cosigned checkpoint of size {recorded.size}: {exc}")
    return Verdict(200, "")
