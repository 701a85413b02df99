"""Hot retention: rows leave the audit store only once they are archived and the archive verified.

`hot_purge` verifies the whole archive first (`check.verify_archive`: chain,
digests, leaves, roots, signatures, Object Lock), then that the store's first
`n` leaves have the root of the archive's newest signed checkpoint (so the
archive holds exactly the store's history up to `n`). Only then does it purge,
through the audit store's own purge path (`ledger.purge`), the rows below `n`
recorded more than `keep` ago and not under a legal hold, besides the rows past
`retain_until`: it records the seal (`audit_archive_seals`, which the database's
triggers require before they let such a row go) and names the archive's head in
the signed purge record. Anything that does not verify stops it before any delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from audit_sink.adapters.db import audit_tree
from audit_sink.adapters.ledger import ArchiveSeal, PurgeOutcome, purge
from audit_sink.adapters.signing import NoteSigner
from audit_sink.archive.check import ArchiveReport, verify_archive
from audit_sink.archive.objects import ArchiveObjects
from audit_sink.archive.seal import ArchiveStateError
from audit_sink.domain.cosignature import CosignerKey
from audit_sink.domain.merkle import Frontier
from audit_sink.domain.times import as_utc

__all__ = ["hot_purge"]


def hot_purge(
    engine: Engine,
    signer: NoteSigner,
    archive: ArchiveObjects,
    *,
    keep: timedelta,
    actor: str,
    now: datetime | None = None,
    witness_keys: Sequence[CosignerKey] = (),
    threshold: int = 1,
) -> tuple[PurgeOutcome, ArchiveReport]:
    """Purge what retention allows plus the archived rows older than `keep`; ArchiveStateError, and
    nothing deleted, unless the archive verifies and holds the store's history."""
    if keep < timedelta(0):
        raise ValueError("the hot retention cannot be negative")
    now = as_utc(now or datetime.now(UTC))
    report = verify_archive(archive, signer.verifier, witness_keys=witness_keys, threshold=threshold)
    if not report.ok:
        raise ArchiveStateError(
            f"the archive {report.location} does not verify ({len(report.problems)} problem(s), first: "
            f"{report.problems[0]}): nothing purged"
        )
    if report.latest is None or report.head is None:
        raise ArchiveStateError(f"the archive {report.location} holds no segment yet: nothing archived to purge")
    end = report.latest.size
    with engine.connect() as conn:
        query = select(audit_tree.c.leaf_hash).where(audit_tree.c.idx < end).order_by(audit_tree.c.idx)
        hashes = [bytes(h) for (h,) in conn.execute(query)]
    if len(hashes) != end or Frontier.of(hashes).root() != report.latest.root:
        raise ArchiveStateError(
            f"the store's first {end} leaves are not the archive's (root of its checkpoint of size {end}):"
            " nothing purged"
        )
    seal = ArchiveSeal(report.location, report.segments - 1, end, report.latest.root, report.head, now - keep)
    return purge(engine, signer, actor=actor, now=now, archived=seal), report
