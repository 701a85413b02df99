"""Read a request's rows back from the archive, verified (`atb trace --archive`, the compliance views).

`read_archived` reads every manifest and checks the whole hash chain and each
manifest's signed checkpoint (`format.Chain`, the checks `atb audit verify
--archive` runs). It downloads only the segments whose manifest lists the
request id (and whose occurred-at range meets the range asked, if one is), and
checks each in full: its bytes against its manifest's digest and length, its
range against the manifest, its frontier against the signed root of the leaves
before it, its leaves against the root of its own signed checkpoint, and every
row against its leaf. A row whose leaf only a redaction record explains needs
that record, which comes later in the log: the segments after the first one
read are then read and checked too. Anything that does not hold raises
`ArchiveTamperedError`, which names the segment; no row of an archive that does
not verify is returned.

On a versioned bucket, writing to a sealed key adds a newer version and a delete
adds a delete marker (Object Lock forbids changing or deleting the sealed
version, not adding versions after it). The reader reads the original: the
oldest version of each manifest, and the oldest version of each segment whose
bytes are the ones its manifest names (the oldest one, which then fails the
checks, if none is). Later versions and delete markers are ignored and reported
in `notices` (`objects.Originals`, which `atb audit verify --archive`, hot
retention and the sealer read through too). The server's signature is not trusted for any of this: the
checkpoints are checked with the verifier key given, never one read from the archive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from audit_sink.adapters.signing import verify_note
from audit_sink.archive.format import ArchiveFormatError, Chain, Manifest, Segment, seq_of
from audit_sink.archive.objects import ArchiveObjects, Originals
from audit_sink.domain.checkpoint import Checkpoint, NoteError, VerifierKey
from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import as_utc, parse_time

__all__ = ["ArchiveTamperedError", "ArchivedRow", "VerifiedArchiveRows", "read_archived"]


class ArchiveTamperedError(RuntimeError):
    """The archive does not verify where the rows asked for are: `problems` name the segments."""

    def __init__(self, location: str, problems: Sequence[str]) -> None:
        self.location = location
        self.problems = tuple(problems)
        self.segments = tuple(sorted({int(n) for p in problems for n in re.findall(r"\bsegment (\d+)", p)}))
        named = f"segment(s) {', '.join(map(str, self.segments))}" if self.segments else "its manifest chain"
        shown = "; ".join(self.problems[:3]) + (f"; and {len(self.problems) - 3} more" if len(problems) > 3 else "")
        super().__init__(f"the archive {location} does not verify at {named}: {shown}")


@dataclass(frozen=True)
class ArchivedRow:
    row: AuditRow
    leaf: int
    """Its leaf index in the audit log."""
    segment: int
    checkpoint_size: int
    """The size of the signed checkpoint that covers it (its segment's end), checked with the verifier key."""
    seq: int | None = None
    """Its `seq` in the store it was archived from."""


@dataclass(frozen=True)
class VerifiedArchiveRows:
    location: str
    rows: tuple[ArchivedRow, ...]
    """The rows asked for, in log order."""
    segments: tuple[int, ...]
    """The segments read and verified in full."""
    manifests: int
    """The manifests whose chain was verified (every one in the archive)."""
    head: str | None
    """SHA-256 of the newest manifest: the head of the verified chain."""
    latest: Checkpoint | None
    notices: tuple[str, ...] = ()
    """Later versions and delete markers found (and ignored) on a versioned bucket."""


def _checkpoint(manifest: Manifest, key: VerifierKey) -> Checkpoint | None:
    try:
        return Checkpoint.parse(verify_note(manifest.checkpoint, key).text)
    except NoteError:
        return None


def _wanted(manifest: Manifest, request_id: str | None, since: datetime | None, until: datetime | None) -> bool:
    if request_id is not None and request_id not in manifest.request_ids:
        return False
    if since is None and until is None:
        return True
    if manifest.occurred_from is None or manifest.occurred_until is None:
        return False  # no rows at all
    first, last = parse_time(manifest.occurred_from), parse_time(manifest.occurred_until)
    return (since is None or last >= since) and (until is None or first <= until)


_Link = tuple[str, bytes, Manifest, Checkpoint | None]


def _walk(store: Originals, links: Iterable[_Link], read: set[int], origin: str) -> tuple[Chain, dict[int, Segment]]:
    chain = Chain(origin=origin)
    segments: dict[int, Segment] = {}
    for _key, data, manifest, checkpoint in links:
        if manifest.seq not in read:
            chain.skip(data, manifest, checkpoint)
            continue
        segment_bytes = store.get(manifest.segment_key, manifest.segment_sha256)
        segment: Segment | None = None
        if segment_bytes is None:
            chain.problems.append(f"segment {manifest.seq}: {manifest.segment_key} is missing")
        else:
            try:
                segment = Segment.decode(segment_bytes)
            except ArchiveFormatError as exc:
                chain.problems.append(f"segment {manifest.seq} ({manifest.segment_key}): {exc}")
        chain.link(data, manifest, segment_bytes, segment, checkpoint)
        if segment is not None:
            segments[manifest.seq] = segment
    return chain, segments


def read_archived(
    archive: ArchiveObjects,
    key: VerifierKey,
    *,
    request_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> VerifiedArchiveRows:
    """The archived rows of `request_id` (occurred within [`since`, `until`] if given), each verified;
    ArchiveTamperedError if the manifest chain or a segment read does not verify. Given an `Originals`,
    reads through it (so that the caller reads the very versions verified)."""
    since = as_utc(since) if since is not None else None
    until = as_utc(until) if until is not None else None
    store = archive if isinstance(archive, Originals) else Originals(archive)
    problems: list[str] = []
    try:
        keys = sorted(store.list("manifests/"), key=seq_of)
    except ArchiveFormatError as exc:
        raise ArchiveTamperedError(archive.location, [str(exc)]) from exc
    links: list[_Link] = []
    for mkey in keys:
        data = store.get(mkey)
        if data is None:
            problems.append(f"{mkey} is listed but cannot be read")
            continue
        try:
            manifest = Manifest.decode(data)
        except ArchiveFormatError as exc:
            problems.append(f"{mkey} is unreadable: {exc}")
            continue
        links.append((mkey, data, manifest, _checkpoint(manifest, key)))
    wanted = {m.seq for _, _, m, _ in links if _wanted(m, request_id, since, until)}
    chain, segments = _walk(store, links, wanted, key.name)
    if chain.unsettled:  # redacted rows: their redaction records are in later segments
        first = min(wanted)
        chain, segments = _walk(store, links, {m.seq for _, _, m, _ in links if m.seq >= first}, key.name)
    problems += chain.finish()
    if problems:
        raise ArchiveTamperedError(archive.location, problems)
    rows = [
        ArchivedRow(entry.row, entry.idx, seq, segment.end, entry.seq)
        for seq, segment in sorted(segments.items())
        if seq in wanted
        for entry in segment.entries
        if entry.row is not None
        and (request_id is None or entry.row.request_id == request_id)
        and (since is None or entry.row.occurred_at >= since)
        and (until is None or entry.row.occurred_at <= until)
    ]
    return VerifiedArchiveRows(
        archive.location,
        tuple(rows),
        tuple(sorted(wanted)),
        len(links),
        chain.prev,
        chain.latest,
        tuple(dict.fromkeys(store.notices)),
    )
