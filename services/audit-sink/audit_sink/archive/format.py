"""What the archive holds: segments of the log, and manifests that chain them.

A **segment** covers the leaves `start` ≤ i < `end` of the audit log, where
`end` is the size of a signed checkpoint. It holds, per leaf, the leaf text and
the exact stored row (every column, the bytes in base64), or only the leaf text
for a row purged before it was archived (from its tombstone); the right edge of
the tree of `start` leaves (`frontier`: the peaks of its perfect subtrees); the
signed checkpoint of size `end`; and the witnesses' cosigned notes of it.
Whoever has a segment and the root of the tree of `start` leaves can recompute
the root of `end` leaves: the frontier must give the first root, the frontier
extended by the segment's leaf hashes the second, and that must be the signed
checkpoint's.

A **manifest** names its segment by key, SHA-256 and length, repeats its range,
root and checkpoint, and chains to the manifest before it by the SHA-256 of that
manifest's bytes (`prev`; none for the first). It also lists what a legal hold
is matched on (request ids, occurred-at range) so holds can be mapped to the
archived objects without reading the segments.

Both are canonical JSON (sorted keys, compact). Keys: `<prefix>segments/<seq>.json`
and `<prefix>manifests/<seq>.json`, `seq` zero-padded to 12 digits so a
listing is in order.

`Chain` checks one link after another and names what is wrong: a manifest
that does not chain, a segment whose bytes are not the ones its manifest names,
a leaf that is not its row's, a root that is not the checkpoint's. Signatures
are checked by the caller (`audit_sink.archive.check`): this module is pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import Frontier, leaf_hash
from audit_sink.domain.redaction import REDACTION_TOPIC, committed_leaf, entries_by_leaf, redaction_problem
from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import parse_time, render_time
from contracts import canonical_json

__all__ = [
    "MANIFEST_FORMAT",
    "SEGMENT_FORMAT",
    "ArchiveFormatError",
    "Chain",
    "Manifest",
    "Segment",
    "SegmentEntry",
    "hold_covers",
    "manifest_key",
    "row_from_json",
    "row_json",
    "segment_key",
    "seq_of",
    "sha256_hex",
]

SEGMENT_FORMAT = "atb-audit-archive-segment/1"
MANIFEST_FORMAT = "atb-audit-archive-manifest/1"


class ArchiveFormatError(ValueError):
    """An archived object is not a segment or manifest of this format."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def segment_key(prefix: str, seq: int) -> str:
    return f"{prefix}segments/{seq:012d}.json"


def manifest_key(prefix: str, seq: int) -> str:
    return f"{prefix}manifests/{seq:012d}.json"


def seq_of(key: str) -> int:
    """The sequence number in a segment or manifest key; ArchiveFormatError for anything else."""
    name = key.rsplit("/", 1)[-1]
    stem = name.removesuffix(".json")
    if stem == name or len(stem) != 12 or not stem.isdigit():
        raise ArchiveFormatError(f"{key!r} is not an archive object key")
    return int(stem)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ArchiveFormatError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ArchiveFormatError(f"{what} is not base64: {exc}") from exc


def row_json(row: AuditRow, seq: int | None) -> dict[str, Any]:
    """Every column of a stored row, as JSON: times in the store's fixed UTC spelling, bytes in base64."""
    return {
        "seq": seq,
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "request_id": row.request_id,
        "producer": row.producer,
        "occurred_at": render_time(row.occurred_at),
        "recorded_at": render_time(row.recorded_at),
        "retain_until": render_time(row.retain_until),
        "record_key": _b64(row.record_key),
        "raw": _b64(row.raw),
        "decode_error": row.decode_error,
        "redacted": row.redacted,
        "received_sha256": row.received_sha256,
        "received_len": row.received_len,
        "audit_type": row.audit_type,
    }


def _opt_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ArchiveFormatError(f"{what} is not text")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArchiveFormatError(f"{what} is not an integer")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ArchiveFormatError(f"{what} is not text")
    return value


def _time(value: object, what: str) -> datetime:
    try:
        return parse_time(_str(value, what))
    except ValueError as exc:
        raise ArchiveFormatError(f"{what} is not a time: {exc}") from exc


def row_from_json(data: Mapping[str, Any]) -> tuple[int | None, AuditRow]:
    """The row `row_json` wrote (and its seq); ArchiveFormatError if a column is missing or of the wrong kind."""
    try:
        key = data["record_key"]
        received_len = data["received_len"]
        seq = data["seq"]
        row = AuditRow(
            topic=_str(data["topic"], "topic"),
            partition=_int(data["partition"], "partition"),
            offset=_int(data["offset"], "offset"),
            event_id=_str(data["event_id"], "event_id"),
            event_type=_str(data["event_type"], "event_type"),
            request_id=_opt_str(data["request_id"], "request_id"),
            producer=_opt_str(data["producer"], "producer"),
            occurred_at=_time(data["occurred_at"], "occurred_at"),
            recorded_at=_time(data["recorded_at"], "recorded_at"),
            retain_until=_time(data["retain_until"], "retain_until"),
            record_key=None if key is None else _unb64(key, "record_key"),
            raw=_unb64(data["raw"], "raw"),
            decode_error=_opt_str(data["decode_error"], "decode_error"),
            redacted=bool(data["redacted"]),
            received_sha256=_opt_str(data["received_sha256"], "received_sha256"),
            received_len=None if received_len is None else _int(received_len, "received_len"),
            audit_type=_opt_str(data["audit_type"], "audit_type"),
        )
    except KeyError as exc:
        raise ArchiveFormatError(f"archived row has no {exc.args[0]!r}") from exc
    return (None if seq is None else _int(seq, "seq")), row


@dataclass(frozen=True)
class SegmentEntry:
    """One leaf of a segment: its text, and the stored row (None when it was purged before archiving)."""

    idx: int
    leaf: bytes
    row: AuditRow | None
    seq: int | None = None
    """The row's `seq` in the store it was archived from."""
    purge_id: str | None = None
    """For a leaf without a row: the purge that removed the row (its tombstone held the leaf)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "idx": self.idx,
            "leaf": self.leaf.decode(),
            "row": None if self.row is None else row_json(self.row, self.seq),
            "purge_id": self.purge_id,
        }

    @classmethod
    def from_json(cls, data: object) -> SegmentEntry:
        if not isinstance(data, dict):
            raise ArchiveFormatError("a segment entry is not an object")
        try:
            row_data = data["row"]
            seq, row = (None, None) if row_data is None else row_from_json(row_data)
            return cls(
                idx=_int(data["idx"], "idx"),
                leaf=_str(data["leaf"], "leaf").encode(),
                row=row,
                seq=seq,
                purge_id=_opt_str(data["purge_id"], "purge_id"),
            )
        except KeyError as exc:
            raise ArchiveFormatError(f"segment entry has no {exc.args[0]!r}") from exc


def _loads(data: bytes, what: str) -> dict[str, Any]:
    import json  # the reader: canonical_json writes, any JSON parser reads

    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArchiveFormatError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ArchiveFormatError(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True)
class Segment:
    origin: str
    seq: int
    start: int
    end: int
    frontier: tuple[bytes, ...]
    """The peaks of the tree of `start` leaves, largest first (merkle.Frontier)."""
    entries: tuple[SegmentEntry, ...]
    checkpoint: str
    """The signed checkpoint note of size `end`."""
    cosigned: tuple[str, ...] = ()
    """That checkpoint as cosigned by witnesses (notes with the log's signature and a cosignature)."""

    def encode(self) -> bytes:
        return canonical_json(
            {
                "format": SEGMENT_FORMAT,
                "origin": self.origin,
                "seq": self.seq,
                "start": self.start,
                "end": self.end,
                "frontier": [peak.hex() for peak in self.frontier],
                "entries": [entry.as_json() for entry in self.entries],
                "checkpoint": self.checkpoint,
                "cosigned": list(self.cosigned),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Segment:
        value = _loads(data, "segment")
        if value.get("format") != SEGMENT_FORMAT:
            raise ArchiveFormatError(f"not a segment of format {SEGMENT_FORMAT}: {value.get('format')!r}")
        try:
            frontier = value["frontier"]
            entries = value["entries"]
            cosigned = value["cosigned"]
            if not isinstance(frontier, list) or not isinstance(entries, list) or not isinstance(cosigned, list):
                raise ArchiveFormatError("segment frontier, entries and cosigned must be lists")
            return cls(
                origin=_str(value["origin"], "origin"),
                seq=_int(value["seq"], "seq"),
                start=_int(value["start"], "start"),
                end=_int(value["end"], "end"),
                frontier=tuple(bytes.fromhex(_str(p, "frontier peak")) for p in frontier),
                entries=tuple(SegmentEntry.from_json(e) for e in entries),
                checkpoint=_str(value["checkpoint"], "checkpoint"),
                cosigned=tuple(_str(c, "cosigned note") for c in cosigned),
            )
        except KeyError as exc:
            raise ArchiveFormatError(f"segment has no {exc.args[0]!r}") from exc
        except ValueError as exc:
            if isinstance(exc, ArchiveFormatError):
                raise
            raise ArchiveFormatError(f"segment is malformed: {exc}") from exc

    def hold_scope(self) -> tuple[tuple[str, ...], str | None, str | None]:
        """Request ids and the occurred-at range of its rows: what a legal hold is matched on."""
        rows = [e.row for e in self.entries if e.row is not None]
        ids = tuple(sorted({r.request_id for r in rows if r.request_id is not None}))
        if not rows:
            return ids, None, None
        return ids, render_time(min(r.occurred_at for r in rows)), render_time(max(r.occurred_at for r in rows))


@dataclass(frozen=True)
class Manifest:
    origin: str
    seq: int
    start: int
    end: int
    root: bytes
    segment_key: str
    segment_sha256: str
    segment_len: int
    checkpoint: str
    prev: str | None
    """SHA-256 (hex) of the previous manifest's bytes; None for the first."""
    sealed_at: str
    retain_until: str
    request_ids: tuple[str, ...] = ()
    occurred_from: str | None = None
    occurred_until: str | None = None

    def encode(self) -> bytes:
        return canonical_json(
            {
                "format": MANIFEST_FORMAT,
                "origin": self.origin,
                "seq": self.seq,
                "start": self.start,
                "end": self.end,
                "root": self.root.hex(),
                "segment": {"key": self.segment_key, "sha256": self.segment_sha256, "length": self.segment_len},
                "checkpoint": self.checkpoint,
                "prev": self.prev,
                "sealed_at": self.sealed_at,
                "retain_until": self.retain_until,
                "hold_scope": {
                    "request_ids": list(self.request_ids),
                    "occurred_from": self.occurred_from,
                    "occurred_until": self.occurred_until,
                },
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        value = _loads(data, "manifest")
        if value.get("format") != MANIFEST_FORMAT:
            raise ArchiveFormatError(f"not a manifest of format {MANIFEST_FORMAT}: {value.get('format')!r}")
        try:
            segment = value["segment"]
            scope = value["hold_scope"]
            if not isinstance(segment, dict) or not isinstance(scope, dict):
                raise ArchiveFormatError("manifest segment and hold_scope must be objects")
            ids = scope["request_ids"]
            if not isinstance(ids, list):
                raise ArchiveFormatError("manifest hold_scope.request_ids must be a list")
            return cls(
                origin=_str(value["origin"], "origin"),
                seq=_int(value["seq"], "seq"),
                start=_int(value["start"], "start"),
                end=_int(value["end"], "end"),
                root=bytes.fromhex(_str(value["root"], "root")),
                segment_key=_str(segment["key"], "segment key"),
                segment_sha256=_str(segment["sha256"], "segment sha256"),
                segment_len=_int(segment["length"], "segment length"),
                checkpoint=_str(value["checkpoint"], "checkpoint"),
                prev=_opt_str(value["prev"], "prev"),
                sealed_at=_str(value["sealed_at"], "sealed_at"),
                retain_until=_str(value["retain_until"], "retain_until"),
                request_ids=tuple(_str(i, "request id") for i in ids),
                occurred_from=_opt_str(scope["occurred_from"], "occurred_from"),
                occurred_until=_opt_str(scope["occurred_until"], "occurred_until"),
            )
        except KeyError as exc:
            raise ArchiveFormatError(f"manifest has no {exc.args[0]!r}") from exc
        except ValueError as exc:
            if isinstance(exc, ArchiveFormatError):
                raise
            raise ArchiveFormatError(f"manifest is malformed: {exc}") from exc


def _whole(frontier: Frontier) -> bool:
    """Whether the frontier has one peak per perfect subtree of its size (one can extend it)."""
    return len(frontier.peaks) == frontier.size.bit_count()


def _entry_problem(entry: SegmentEntry) -> str | None:
    """'' when the row is the leaf's, None when only a redaction record can tell, else the problem."""
    if entry.row is None:
        return "" if entry.purge_id else f"leaf {entry.idx}: no row and no purge that removed it"
    if leaf_bytes(entry.row) == entry.leaf:
        return ""
    return None


@dataclass
class Chain:
    """The archive read link by link, oldest first; `problems` names everything that does not hold."""

    origin: str
    seq: int = -1
    prev: str | None = None
    frontier: Frontier = field(default_factory=Frontier)
    problems: list[str] = field(default_factory=list)
    leaves: int = 0
    rows: int = 0
    latest: Checkpoint | None = None
    _pending: list[SegmentEntry] = field(default_factory=list)
    _records: dict[int, bytes] = field(default_factory=dict)
    _signed_root: bytes | None = None

    def _link_manifest(self, manifest_bytes: bytes, manifest: Manifest, checkpoint: Checkpoint | None) -> None:
        """The manifest's own link: its place in the hash chain and its signed checkpoint."""
        where = f"segment {manifest.seq}"
        problems = self.problems
        if manifest.seq != self.seq + 1:
            problems.append(f"chain break: manifest {manifest.seq} follows manifest {self.seq} (missing in between)")
        if manifest.prev != self.prev:
            problems.append(
                f"chain break at manifest {manifest.seq}: it names {manifest.prev or 'no'} previous manifest, "
                f"but the previous manifest's digest is {self.prev or 'none (it is the first)'}"
            )
        if manifest.origin != self.origin:
            problems.append(f"{where}: origin {manifest.origin!r}, expected {self.origin!r}")
        if manifest.start != self.frontier.size:
            problems.append(
                f"{where}: starts at leaf {manifest.start}, the archive so far ends at {self.frontier.size}"
            )
        self.seq, self.prev = manifest.seq, sha256_hex(manifest_bytes)
        if checkpoint is None:
            problems.append(f"{where}: its checkpoint's signature does not verify")
        elif (checkpoint.origin, checkpoint.size, checkpoint.root) != (manifest.origin, manifest.end, manifest.root):
            problems.append(f"{where}: the manifest's range or root is not its signed checkpoint's")

    def skip(self, manifest_bytes: bytes, manifest: Manifest, checkpoint: Checkpoint | None) -> None:
        """Check a manifest's link without reading its segment (a reader that needs only some segments).

        The next segment linked is then checked against the signed root of the leaves before it (its
        frontier must give that root) instead of against the leaves themselves."""
        self._link_manifest(manifest_bytes, manifest, checkpoint)
        self.frontier = Frontier(manifest.end, ())
        signed = checkpoint is not None and (checkpoint.origin, checkpoint.size, checkpoint.root) == (
            manifest.origin,
            manifest.end,
            manifest.root,
        )
        self._signed_root = checkpoint.root if checkpoint is not None and signed else None
        if signed:
            self.latest = checkpoint

    @property
    def unsettled(self) -> tuple[int, ...]:
        """Leaves whose archived row only a redaction record can explain, not settled yet (`finish`)."""
        return tuple(e.idx for e in self._pending)

    def link(
        self,
        manifest_bytes: bytes,
        manifest: Manifest,
        segment_bytes: bytes | None,
        segment: Segment | None,
        checkpoint: Checkpoint | None,
    ) -> None:
        """Check the next link. `checkpoint` is the manifest's note, its signature already checked
        (None if it did not verify); `segment` None if it could not be read or decoded."""
        where = f"segment {manifest.seq}"
        problems = self.problems
        self._link_manifest(manifest_bytes, manifest, checkpoint)
        if segment_bytes is not None and (
            sha256_hex(segment_bytes) != manifest.segment_sha256 or len(segment_bytes) != manifest.segment_len
        ):
            problems.append(
                f"{where} was altered: its bytes have SHA-256 {sha256_hex(segment_bytes)[:16]}…, "
                f"the manifest names {manifest.segment_sha256[:16]}…"
            )
        if segment is None:
            self.frontier = Frontier(manifest.end, ())  # nothing to extend: later roots will not match either
            self._signed_root = None
            problems.append(f"{where}: unreadable, its leaves cannot be checked")
            return
        if (segment.origin, segment.seq, segment.start, segment.end, segment.checkpoint) != (
            manifest.origin,
            manifest.seq,
            manifest.start,
            manifest.end,
            manifest.checkpoint,
        ):
            problems.append(f"{where}: its range or checkpoint differs from its manifest's")
        given = Frontier(segment.start, segment.frontier)
        if self._signed_root is not None:  # the segments before were skipped: only their signed root is known
            if given.size != self.frontier.size or not _whole(given) or given.root() != self._signed_root:
                problems.append(f"{where}: its frontier does not give the signed root of the leaves before it")
            else:
                self.frontier = given
        elif given != self.frontier:
            problems.append(f"{where}: its frontier is not the right edge of the leaves before it")
        self._signed_root = None
        indexes = [e.idx for e in segment.entries]
        if indexes != list(range(segment.start, segment.end)):
            problems.append(f"{where}: its leaves are not exactly {segment.start}..{segment.end - 1} in order")
        for entry in segment.entries:
            problem = _entry_problem(entry)
            if problem is None:
                self._pending.append(entry)
            elif problem:
                problems.append(f"{where}: {problem}")
            if entry.row is not None and entry.row.topic == REDACTION_TOPIC:
                self._records[entry.idx] = entry.row.raw
        # Only the size of the leaves before is known (skipped, or an unreadable segment): go on from the
        # segment's own frontier, if it is one, so that its leaves are still checked against its checkpoint.
        base = self.frontier if _whole(self.frontier) else given if _whole(given) else None
        self.leaves += len(segment.entries)
        self.rows += sum(1 for e in segment.entries if e.row is not None)
        if base is None:
            self.frontier = Frontier(segment.end, ())
            problems.append(f"{where}: its leaves cannot be checked against its checkpoint (no frontier to extend)")
            return
        self.frontier = base.extend([leaf_hash(e.leaf) for e in segment.entries])
        if checkpoint is not None:
            if self.frontier.size != checkpoint.size or self.frontier.root() != checkpoint.root:
                problems.append(
                    f"{where}: the root of its {self.frontier.size} leaves is not the signed checkpoint's "
                    f"(size {checkpoint.size}): a leaf was changed, added or removed"
                )
            else:
                self.latest = checkpoint

    def finish(self) -> list[str]:
        """Settle the rows whose leaf only a redaction record explains; every problem found."""
        entries, record_problems = entries_by_leaf(self._records)
        self.problems.extend(record_problems)
        for entry in self._pending:
            assert entry.row is not None
            redaction = entries.get(entry.idx)
            if redaction is None or committed_leaf(entry.row, redaction) != entry.leaf:
                self.problems.append(f"leaf {entry.idx}: the archived row is not the one its leaf commits to")
            elif reason := redaction_problem(entry.row, redaction):
                self.problems.append(f"leaf {entry.idx}: {reason}")
        self._pending.clear()
        return self.problems


def hold_covers(holds: Sequence[tuple[str | None, datetime | None, datetime | None]], manifest: Manifest) -> bool:
    """Whether any (request id, from, until) hold may cover a row of the segment.

    A request hold covers it when the request is one of its rows'; a range hold when the range
    overlaps the segment's occurred-at range (conservative: a segment is held when in doubt).
    """
    ids = set(manifest.request_ids)
    first = parse_time(manifest.occurred_from) if manifest.occurred_from else None
    last = parse_time(manifest.occurred_until) if manifest.occurred_until else None
    for request_id, start, until in holds:
        if request_id is not None:
            if request_id in ids:
                return True
        elif (
            start is not None
            and until is not None
            and first is not None
            and last is not None
            and first < until
            and start <= last
        ):
            return True
    return False
