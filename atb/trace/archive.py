"""The immutable archive as a source for `atb trace`: a request's rows after hot retention removed them.

The rows come from `audit_sink.archive.read.read_archived`: only the segments whose
manifest lists the request are downloaded, and each is verified against its
manifest, its signed checkpoint and the manifests' hash chain before any row is
used (on a versioned bucket, the versions written at sealing time). An archive
that does not verify raises `ArchiveTamperedError` naming the segment: nothing
from it is shown.
"""

from __future__ import annotations

from atb.trace.timeline import TraceRecord
from audit_sink.archive.objects import open_archive
from audit_sink.archive.read import VerifiedArchiveRows, read_archived
from audit_sink.domain.checkpoint import VerifierKey
from contracts import EventDecodeError, decode_envelope, payload_of

__all__ = ["ARCHIVE_ORIGIN", "archive_records"]

ARCHIVE_ORIGIN = "archive"


def archive_records(
    url: str, key: VerifierKey, request_id: str, *, endpoint: str | None = None
) -> tuple[list[TraceRecord], VerifiedArchiveRows]:
    """The request's archived rows as trace records (origin "archive"), and what was read and verified."""
    found = read_archived(open_archive(url, endpoint=endpoint), key, request_id=request_id)
    out: list[TraceRecord] = []
    for archived in found.rows:
        row = archived.row
        where = (
            f"leaf {archived.leaf}, archived segment {archived.segment}, "
            f"signed checkpoint (tree size {archived.checkpoint_size}), verified"
        )
        try:
            envelope = decode_envelope(row.raw)
            record = TraceRecord(
                row.topic, row.partition, row.offset, envelope, payload_of(envelope), ARCHIVE_ORIGIN, where
            )
        except EventDecodeError:
            record = TraceRecord(row.topic, row.partition, row.offset, None, None, ARCHIVE_ORIGIN, where)
        out.append(record)
    return out, found
