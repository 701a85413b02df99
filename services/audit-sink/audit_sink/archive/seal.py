"""Seal closed segments of the audit store into the archive (`atb audit archive`).

A segment is closed once a signed checkpoint covers it: its leaves can no longer
change without breaking that signature. Each run continues from the archive's
own tip (the newest manifest and its segment, read back and checked against the
store's leaf hashes), and seals, one after another, segments that end at stored
checkpoints: the largest checkpoint within `max_leaves` of the tip, or the next
one if none is that close. Checkpoints younger than `settle` are left for the
next run, so their witnesses' cosignatures have time to arrive.

Before writing, the segment is checked against the store: every leaf text
recomputes to the stored leaf hash, and the frontier extended by them gives the
signed checkpoint's root. The segment is written first, then its manifest, both
locked in COMPLIANCE mode until `retain_until` (now + 7 years by default, and
never before the latest `retain_until` of its rows). A crash in between leaves a
segment without manifest: the next run reads it back, checks it, and writes the
manifest over it. Sealing is idempotent: an object that is already there is
read and verified, never rewritten (the server would refuse anyway).

On a versioned bucket (every AWS bucket with Object Lock) the server does not
refuse a write over a sealed key: it keeps it as a newer version, and a delete as
a delete marker. The sealer reads, locks and holds the sealed versions
(`objects.Originals`), never what was written over them, and tells `warn` of it.

`sync_holds` maps the store's active legal holds to the objects' legal holds.
"""

from __future__ import annotations

import calendar
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, select

from audit_sink.adapters.db import audit_checkpoints, audit_cosignatures, audit_events, audit_tombstones, audit_tree
from audit_sink.adapters.ledger import active_holds, redactions, stored_leaf
from audit_sink.adapters.signing import verify_note
from audit_sink.archive.format import (
    ArchiveFormatError,
    Manifest,
    Segment,
    SegmentEntry,
    hold_covers,
    manifest_key,
    segment_key,
    seq_of,
    sha256_hex,
)
from audit_sink.archive.objects import ArchiveRefusedError, Originals, S3Archive
from audit_sink.domain.checkpoint import Checkpoint, NoteError, VerifierKey
from audit_sink.domain.merkle import Frontier, leaf_hash
from audit_sink.domain.rows import STORED_FIELDS, AuditRow
from audit_sink.domain.times import as_utc, render_time

__all__ = [
    "RETENTION_YEARS",
    "ArchiveStateError",
    "SealOutcome",
    "Sealer",
    "retain_until",
]

RETENTION_YEARS = 7
MIN_RETENTION = timedelta(days=1)
"""The shortest retention `retain_until` accepts (tests); the default is `RETENTION_YEARS`."""
MAX_RETENTION = timedelta(days=3653 * 2)

Progress = Callable[[str], None]


class ArchiveStateError(RuntimeError):
    """The store or the archive does not verify where sealing must continue: nothing was written."""


def _years_later(moment: datetime, years: int) -> datetime:
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, moment.month)[1])  # 29 February → 28
    return moment.replace(year=year, day=day)


def retain_until(now: datetime, retention: timedelta | None = None, rows_until: datetime | None = None) -> datetime:
    """`now` + 7 calendar years (or `retention`, within bounds), and never before `rows_until`."""
    if retention is None:
        until = _years_later(as_utc(now), RETENTION_YEARS)
    elif not MIN_RETENTION <= retention <= MAX_RETENTION:
        raise ValueError(f"archive retention must be between {MIN_RETENTION} and {MAX_RETENTION}, not {retention}")
    else:
        until = as_utc(now) + retention
    until = max(until, as_utc(rows_until)) if rows_until is not None else until
    # Whole seconds, rounded up: S3 keeps retain-until dates to the second.
    return until.replace(microsecond=0) + timedelta(seconds=1) if until.microsecond else until


@dataclass(frozen=True)
class SealOutcome:
    seq: int
    start: int
    end: int
    rows: int
    written: bool
    """False when the segment was in the archive already (verified, not rewritten)."""
    legal_hold: bool


@dataclass
class _Tip:
    seq: int
    frontier: Frontier
    prev: str | None


_ROW_FIELDS = STORED_FIELDS


def _row(values: Sequence[Any]) -> AuditRow:
    data: dict[str, Any] = dict(zip(_ROW_FIELDS, values, strict=True))
    for name in ("occurred_at", "recorded_at", "retain_until"):
        data[name] = as_utc(data[name])
    data["raw"] = bytes(data["raw"])
    data["record_key"] = bytes(data["record_key"]) if data["record_key"] is not None else None
    data["redacted"] = bool(data["redacted"])
    return AuditRow(**data)


class Sealer:
    def __init__(
        self,
        engine: Engine,
        archive: S3Archive,
        key: VerifierKey,
        *,
        max_leaves: int = 10_000,
        retention: timedelta | None = None,
        settle: timedelta = timedelta(minutes=5),
        progress: Progress | None = None,
        warn: Progress | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`warn` hears of what was written over sealed keys of a versioned bucket (ignored, never
        read); `progress` by default."""
        if max_leaves < 1:
            raise ValueError("max_leaves must be at least 1")
        retain_until(datetime.now(UTC), retention)  # refuse a retention out of bounds now, not at the first seal
        self._engine = engine
        self._archive = archive
        self._objects = Originals(archive)
        """What is read, locked and held: on a versioned bucket the sealed versions, never those written over them."""
        self._key = key
        self._max = max_leaves
        self._retention = retention
        self._settle = settle
        self._progress = progress or (lambda _line: None)
        self._warn = warn or self._progress
        self._warned: set[str] = set()
        self._now = now

    # -- the archive's tip ------------------------------------------------------------------

    def _read(self, key: str, sha256: str | None = None) -> bytes:
        data = self._objects.get(key, sha256)
        if data is None:
            raise ArchiveStateError(f"{self._archive.location}: {key} is listed but cannot be read")
        return data

    def _store_hashes(self, start: int, end: int) -> list[bytes]:
        query = (
            select(audit_tree.c.leaf_hash)
            .where(audit_tree.c.idx >= start, audit_tree.c.idx < end)
            .order_by(audit_tree.c.idx)
        )
        with self._engine.connect() as conn:
            return [bytes(h) for (h,) in conn.execute(query)]

    def _check_segment(self, segment: Segment, frontier: Frontier, what: str) -> Frontier:
        """The frontier after `segment`, if it continues `frontier`, matches its checkpoint and the store."""
        try:
            checkpoint = Checkpoint.parse(verify_note(segment.checkpoint, self._key).text)
        except NoteError as exc:
            raise ArchiveStateError(f"{what}: its checkpoint does not verify: {exc}") from exc
        if Frontier(segment.start, segment.frontier) != frontier:
            raise ArchiveStateError(f"{what}: it does not continue the archived leaves before it")
        hashes = [leaf_hash(e.leaf) for e in segment.entries]
        after = frontier.extend(hashes)
        if (after.size, after.root()) != (checkpoint.size, checkpoint.root):
            raise ArchiveStateError(f"{what}: its leaves do not give the root of its signed checkpoint")
        if self._store_hashes(segment.start, segment.end) != hashes:
            raise ArchiveStateError(
                f"{what}: its leaves differ from the audit store's leaves {segment.start}..{segment.end - 1}"
            )
        return after

    def tip(self) -> _Tip:
        """Where the archive ends, its newest link checked against the store."""
        self._objects.refresh()
        manifests = self._objects.list("manifests/")
        if not manifests:
            return _Tip(-1, Frontier(), None)
        try:
            last = max(manifests, key=seq_of)
            data = self._read(last)
            manifest = Manifest.decode(data)
            segment_bytes = self._read(manifest.segment_key, manifest.segment_sha256)
            segment = Segment.decode(segment_bytes)
        except ArchiveFormatError as exc:
            raise ArchiveStateError(f"{self._archive.location}: the newest link is unreadable: {exc}") from exc
        what = f"archived segment {manifest.seq}"
        if sha256_hex(segment_bytes) != manifest.segment_sha256:
            raise ArchiveStateError(f"{what}: its bytes are not the ones its manifest names")
        frontier = self._check_segment(segment, Frontier(segment.start, segment.frontier), what)
        return _Tip(manifest.seq, frontier, sha256_hex(data))

    # -- what to seal next ------------------------------------------------------------------

    def _checkpoints(self, after: int) -> dict[int, tuple[str, datetime]]:
        """Per tree size beyond `after`, the first stored checkpoint note that verifies, and when it was stored."""
        query = (
            select(audit_checkpoints.c.tree_size, audit_checkpoints.c.note, audit_checkpoints.c.created_at)
            .where(audit_checkpoints.c.tree_size > after)
            .order_by(audit_checkpoints.c.id)
        )
        found: dict[int, tuple[str, datetime]] = {}
        with self._engine.connect() as conn:
            for size, note, created in conn.execute(query):
                if int(size) in found:
                    continue
                try:
                    verify_note(note, self._key)
                except NoteError:
                    continue  # not ours, or altered: never archived as a boundary
                found[int(size)] = (str(note), as_utc(created))
        return found

    def _next_end(self, start: int, sizes: Sequence[int]) -> int | None:
        within = [s for s in sizes if start < s <= start + self._max]
        if within:
            return max(within)
        beyond = [s for s in sizes if s > start]
        return min(beyond) if beyond else None

    def _entries(self, start: int, end: int) -> tuple[list[SegmentEntry], list[bytes]]:
        row_columns = [audit_events.c[name] for name in _ROW_FIELDS]
        joined = audit_tree.outerjoin(
            audit_events,
            and_(
                audit_events.c.topic == audit_tree.c.topic,
                audit_events.c.partition == audit_tree.c.partition,
                audit_events.c.offset == audit_tree.c.offset,
            ),
        ).outerjoin(audit_tombstones, audit_tombstones.c.leaf_idx == audit_tree.c.idx)
        query = (
            select(
                audit_tree.c.idx,
                audit_tree.c.leaf_hash,
                audit_events.c.seq,
                audit_tombstones.c.leaf,
                audit_tombstones.c.purge_id,
                *row_columns,
            )
            .select_from(joined)
            .where(audit_tree.c.idx >= start, audit_tree.c.idx < end)
            .order_by(audit_tree.c.idx)
        )
        entries: list[SegmentEntry] = []
        hashes: list[bytes] = []
        with self._engine.connect() as conn:
            redacted = redactions(conn)
            for values in conn.execute(query):
                idx, digest, seq, stone, purge_id = int(values[0]), bytes(values[1]), values[2], values[3], values[4]
                if seq is not None:
                    row = _row(tuple(values[5:]))
                    leaf = stored_leaf(row, redacted.get(idx))
                    entry = SegmentEntry(idx, leaf, row, int(seq))
                elif stone is not None:
                    entry = SegmentEntry(idx, bytes(stone), None, None, str(purge_id))
                else:
                    raise ArchiveStateError(f"leaf {idx} has neither a row nor a tombstone: its leaf text is lost")
                if leaf_hash(entry.leaf) != digest:
                    raise ArchiveStateError(
                        f"the audit store does not verify at leaf {idx}: its row or tombstone is not its leaf"
                    )
                entries.append(entry)
                hashes.append(digest)
        if [e.idx for e in entries] != list(range(start, end)):
            raise ArchiveStateError(f"the audit store lacks leaves between {start} and {end}")
        return entries, hashes

    def _cosigned(self, size: int, root: bytes) -> tuple[str, ...]:
        query = (
            select(audit_cosignatures.c.note)
            .where(audit_cosignatures.c.tree_size == size, audit_cosignatures.c.root_hash == root)
            .order_by(audit_cosignatures.c.id)
        )
        with self._engine.connect() as conn:
            return tuple(dict.fromkeys(str(n) for (n,) in conn.execute(query)))

    def _holds(self) -> list[tuple[str | None, datetime | None, datetime | None]]:
        return [
            (request_id, as_utc(f) if f else None, as_utc(u) if u else None)
            for _, request_id, f, u, _ in active_holds(self._engine)
        ]

    # -- writing ----------------------------------------------------------------------------

    def _put_or_adopt(self, key: str, data: bytes, until: datetime, hold: bool) -> tuple[bytes, bool]:
        """Write `data` at `key`; if the key is taken, the bytes already there (and False), their lock
        extended to `until` if it ends sooner (the caller verifies them).

        On a versioned bucket the server takes a write to a taken key as a newer version instead of
        refusing it: the key's original is read back after the write, and if another sealer's bytes
        came first, those are the ones adopted, as where the server refuses."""
        existing = self._objects.get(key)
        if existing is None:
            try:
                self._objects.put_locked(key, data, until, legal_hold=hold)
            except ArchiveRefusedError:
                existing = self._objects.get(key)  # another sealer won the race: check what it wrote
                if existing is None:
                    raise
            else:
                if not self._objects.versioned:
                    return data, True
                existing = self._objects.get(key)
                if existing == data:
                    return data, True
                if existing is None:
                    raise ArchiveStateError(f"{self._archive.location}: {key} was written but cannot be read back")
        lock = self._objects.lock(key)
        assert lock is not None  # an S3 archive always says
        if lock.mode != "COMPLIANCE" or lock.retain_until is None or lock.retain_until < until:
            self._objects.extend_retention(key, until)
        if hold and not lock.legal_hold:
            self._objects.set_legal_hold(key, True)
        return existing, False

    def _seal_one(self, tip: _Tip, end: int, note: str) -> tuple[_Tip, SealOutcome]:
        seq, start = tip.seq + 1, tip.frontier.size
        checkpoint = Checkpoint.parse(verify_note(note, self._key).text)
        entries, hashes = self._entries(start, end)
        after = tip.frontier.extend(hashes)
        if after.root() != checkpoint.root:
            raise ArchiveStateError(
                f"the audit store's first {end} leaves do not have the root of its signed checkpoint of size {end}"
            )
        segment = Segment(
            origin=checkpoint.origin,
            seq=seq,
            start=start,
            end=end,
            frontier=tip.frontier.peaks,
            entries=tuple(entries),
            checkpoint=note,
            cosigned=self._cosigned(end, checkpoint.root),
        )
        rows = [e.row for e in entries if e.row is not None]
        until = retain_until(self._now(), self._retention, max((r.retain_until for r in rows), default=None))
        ids, first, last = segment.hold_scope()
        draft = Manifest(
            origin=checkpoint.origin,
            seq=seq,
            start=start,
            end=end,
            root=checkpoint.root,
            segment_key=segment_key(self._archive.prefix, seq),
            segment_sha256="",
            segment_len=0,
            checkpoint=note,
            prev=tip.prev,
            sealed_at=render_time(self._now()),
            retain_until=render_time(until),
            request_ids=ids,
            occurred_from=first,
            occurred_until=last,
        )
        hold = hold_covers(self._holds(), draft)
        stored, written = self._put_or_adopt(draft.segment_key, segment.encode(), until, hold)
        if not written:  # a segment left by an earlier run (or another sealer): verified, not rewritten
            try:
                segment = Segment.decode(stored)
            except ArchiveFormatError as exc:
                raise ArchiveStateError(f"archived segment {seq} is unreadable: {exc}") from exc
            if (segment.seq, segment.start, segment.end) != (seq, start, end):
                raise ArchiveStateError(
                    f"archived segment {seq} covers leaves {segment.start}..{segment.end - 1}, not {start}..{end - 1}"
                )
            self._check_segment(segment, tip.frontier, f"archived segment {seq}")
            checkpoint = Checkpoint.parse(verify_note(segment.checkpoint, self._key).text)
        manifest = dataclasses.replace(
            draft, segment_sha256=sha256_hex(stored), segment_len=len(stored), checkpoint=segment.checkpoint
        )
        key = manifest_key(self._archive.prefix, seq)
        manifest_bytes, manifest_written = self._put_or_adopt(key, manifest.encode(), until, hold)
        if not manifest_written:
            try:
                found = Manifest.decode(manifest_bytes)
            except ArchiveFormatError as exc:
                raise ArchiveStateError(f"archived manifest {seq} is unreadable: {exc}") from exc
            if (found.prev, found.segment_sha256, found.end) != (tip.prev, manifest.segment_sha256, end):
                raise ArchiveStateError(f"archived manifest {seq} does not chain to the archive or name its segment")
        outcome = SealOutcome(seq, start, end, len(rows), written or manifest_written, hold)
        return _Tip(seq, after, sha256_hex(manifest_bytes)), outcome

    def run(self, *, limit: int | None = None) -> list[SealOutcome]:
        """Seal every closed segment after the archive's tip (at most `limit`); what was sealed."""
        self._archive.require_object_lock()
        tip = self.tip()
        self._progress(
            f"archive {self._archive.location}: {tip.seq + 1} segment(s), {tip.frontier.size} leaves archived"
        )
        self._notices()
        cutoff = self._now() - self._settle
        checkpoints = {
            size: note for size, (note, created) in self._checkpoints(tip.frontier.size).items() if created <= cutoff
        }
        sealed: list[SealOutcome] = []
        while limit is None or len(sealed) < limit:
            end = self._next_end(tip.frontier.size, sorted(checkpoints))
            if end is None:
                break
            tip, outcome = self._seal_one(tip, end, checkpoints[end])
            self._notices()
            sealed.append(outcome)
            state = "sealed" if outcome.written else "already archived, verified"
            held = ", legal hold" if outcome.legal_hold else ""
            self._progress(
                f"segment {outcome.seq}: leaves {outcome.start}..{outcome.end - 1} ({outcome.rows} rows) {state}{held}"
            )
        return sealed

    def _notices(self) -> None:
        for notice in self._objects.notices:
            if notice not in self._warned:
                self._warned.add(notice)
                self._warn(f"archive {self._archive.location}: {notice}")

    def sync_holds(self) -> list[tuple[int, bool]]:
        """Set or clear the legal hold of each archived segment and manifest as the store's holds say;
        the (segment, hold) pairs that changed."""
        holds = self._holds()
        changed: list[tuple[int, bool]] = []
        self._objects.refresh()
        for key in self._objects.list("manifests/"):
            try:
                manifest = Manifest.decode(self._read(key))
            except ArchiveFormatError as exc:
                raise ArchiveStateError(f"{key} is unreadable: {exc}") from exc
            want = hold_covers(holds, manifest)
            lock = self._objects.lock(manifest.segment_key)
            assert lock is not None  # an S3 archive always says
            if lock.legal_hold != want:
                self._objects.set_legal_hold(manifest.segment_key, want)
                self._objects.set_legal_hold(key, want)
                changed.append((manifest.seq, want))
                self._progress(f"segment {manifest.seq}: legal hold {'placed' if want else 'released'}")
        return changed
