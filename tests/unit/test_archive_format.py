"""The archive's pure parts: segment and manifest round trips, the chain's checks, retention, legal holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audit_sink.archive.format import (
    ArchiveFormatError,
    Chain,
    Manifest,
    Segment,
    SegmentEntry,
    hold_covers,
    manifest_key,
    segment_key,
    seq_of,
    sha256_hex,
)
from audit_sink.archive.seal import retain_until
from audit_sink.domain import RecordMeta, RetentionPolicy, row_for
from audit_sink.domain.checkpoint import Checkpoint, NoteError, PurgeRecord
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import Frontier, leaf_hash

ORIGIN = "atb.local/audit"
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _entries(start: int, count: int, request_id: str = "req-1") -> tuple[SegmentEntry, ...]:
    out = []
    for i in range(start, start + count):
        raw = b'{"not": "an event"}' if i % 2 else b"\x00garbage"
        meta = RecordMeta("atb.audit", i % 3, i, f"k{i}".encode(), raw, int(NOW.timestamp() * 1000))
        row = row_for(meta, recorded_at=NOW, retention=RetentionPolicy())._replace(request_id=request_id)
        out.append(SegmentEntry(i, leaf_bytes(row), row, seq=i + 1))
    return tuple(out)


def _link(
    prev: bytes | None, seq: int, frontier: Frontier, entries: tuple[SegmentEntry, ...]
) -> tuple[bytes, Manifest, bytes]:
    after = frontier.extend([leaf_hash(e.leaf) for e in entries])
    note = Checkpoint(ORIGIN, after.size, after.root()).body()  # signatures are the caller's: not checked here
    segment = Segment(ORIGIN, seq, frontier.size, after.size, frontier.peaks, entries, note)
    data = segment.encode()
    ids, first, last = segment.hold_scope()
    manifest = Manifest(
        ORIGIN,
        seq,
        frontier.size,
        after.size,
        after.root(),
        segment_key("", seq),
        sha256_hex(data),
        len(data),
        note,
        None if prev is None else sha256_hex(prev),
        "2026-03-01T12:00:00.000000Z",
        "2033-03-01T12:00:00Z",
        ids,
        first,
        last,
    )
    return manifest.encode(), manifest, data


def test_segment_and_manifest_round_trip_byte_for_byte() -> None:
    manifest_bytes, manifest, data = _link(None, 0, Frontier(), _entries(0, 5))
    assert Segment.decode(data).encode() == data
    assert Segment.decode(data).entries[1].row == _entries(0, 5)[1].row
    assert Manifest.decode(manifest_bytes) == manifest
    with pytest.raises(ArchiveFormatError, match="not a segment"):
        Segment.decode(manifest_bytes)
    with pytest.raises(ArchiveFormatError, match="not JSON"):
        Manifest.decode(b"\xff")


def test_keys_sort_in_sequence_and_refuse_anything_else() -> None:
    assert manifest_key("p/", 12) == "p/manifests/000000000012.json"
    assert seq_of(segment_key("p/", 7)) == 7
    with pytest.raises(ArchiveFormatError):
        seq_of("p/manifests/7.json")


def test_the_chain_accepts_links_in_order_and_names_a_reordered_segment() -> None:
    m0, man0, s0 = _link(None, 0, Frontier(), _entries(0, 4))
    frontier = Frontier().extend([leaf_hash(e.leaf) for e in _entries(0, 4)])
    m1, man1, s1 = _link(m0, 1, frontier, _entries(4, 3))
    chain = Chain(ORIGIN)
    for mb, man, sb in ((m0, man0, s0), (m1, man1, s1)):
        chain.link(mb, man, sb, Segment.decode(sb), Checkpoint.parse(man.checkpoint))
    assert chain.finish() == []
    assert (chain.leaves, chain.rows, chain.frontier.size) == (7, 7, 7)

    swapped = Segment.decode(s1)
    entries = swapped.entries
    reordered = Segment(**{**swapped.__dict__, "entries": (entries[1], entries[0], entries[2])})
    chain = Chain(ORIGIN)
    chain.link(m0, man0, s0, Segment.decode(s0), Checkpoint.parse(man0.checkpoint))
    chain.link(m1, man1, reordered.encode(), reordered, Checkpoint.parse(man1.checkpoint))
    problems = "\n".join(chain.finish())
    assert "segment 1 was altered" in problems
    assert "not exactly 4..6 in order" in problems
    assert "not the signed checkpoint's" in problems


def test_a_chain_that_skips_segments_checks_the_next_against_the_signed_root_before_it() -> None:
    m0, man0, _ = _link(None, 0, Frontier(), _entries(0, 5))
    frontier = Frontier().extend([leaf_hash(e.leaf) for e in _entries(0, 5)])
    m1, man1, s1 = _link(m0, 1, frontier, _entries(5, 6))
    chain = Chain(ORIGIN)
    chain.skip(m0, man0, Checkpoint.parse(man0.checkpoint))
    chain.link(m1, man1, s1, Segment.decode(s1), Checkpoint.parse(man1.checkpoint))
    assert chain.finish() == []
    assert (chain.leaves, chain.frontier.size, chain.prev) == (6, 11, sha256_hex(m1))

    # A frontier that does not give the skipped leaves' signed root; one that is no frontier of 5 leaves.
    for peaks in ((b"\x00" * 32, *frontier.peaks[1:]), (frontier.root(),)):
        forged = Segment(**{**Segment.decode(s1).__dict__, "frontier": peaks})
        chain = Chain(ORIGIN)
        chain.skip(m0, man0, Checkpoint.parse(man0.checkpoint))
        chain.link(m1, man1, forged.encode(), forged, Checkpoint.parse(man1.checkpoint))
        problems = chain.finish()
        assert "segment 1: its frontier does not give the signed root of the leaves before it" in problems
        assert any(p.startswith("segment 1 was altered") for p in problems)

    # A segment after an unreadable one is still checked against its own checkpoint (no crash, no pass).
    chain = Chain(ORIGIN)
    chain.link(m0, man0, None, None, Checkpoint.parse(man0.checkpoint))
    chain.link(m1, man1, s1, Segment.decode(s1), Checkpoint.parse(man1.checkpoint))
    assert chain.finish() == [
        "segment 0: unreadable, its leaves cannot be checked",
        "segment 1: its frontier is not the right edge of the leaves before it",
    ]
    assert chain.frontier.size == 11


def test_retention_is_seven_calendar_years_in_whole_seconds_and_bounded() -> None:
    assert retain_until(NOW) == datetime(2033, 3, 1, 12, 0, 1, tzinfo=UTC)
    assert retain_until(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(2035, 2, 28, tzinfo=UTC)
    later = datetime(2040, 1, 1, tzinfo=UTC)
    assert retain_until(NOW, rows_until=later) == later  # never before a row's own retain_until
    assert retain_until(NOW, timedelta(days=1)) == datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    for wrong in (timedelta(hours=1), timedelta(days=20 * 366)):
        with pytest.raises(ValueError, match="archive retention must be between"):
            retain_until(NOW, wrong)


def test_legal_holds_cover_a_segment_by_request_or_by_overlapping_range() -> None:
    _, manifest, _ = _link(None, 0, Frontier(), _entries(0, 3, request_id="req-9"))
    day = timedelta(days=1)
    assert hold_covers([("req-9", None, None)], manifest)
    assert not hold_covers([("req-8", None, None)], manifest)
    assert hold_covers([(None, NOW - day, NOW + day)], manifest)
    assert not hold_covers([(None, NOW + day, NOW + 2 * day)], manifest)
    assert not hold_covers([(None, NOW - day, NOW - day / 2)], manifest)


def test_a_hot_purge_record_names_the_archive_and_old_records_keep_their_bytes() -> None:
    plain = PurgeRecord(ORIGIN, "purge-1", NOW.isoformat(), 900, b"\x01" * 32, 3, "ab" * 32)
    assert PurgeRecord.parse(plain.body()) == plain
    assert plain.body().count("\n") == 6  # the bytes signed before hot retention existed
    hot = PurgeRecord(ORIGIN, "purge-2", NOW.isoformat(), 900, b"\x01" * 32, 3, "ab" * 32, 600, "cd" * 32)
    assert hot.body().endswith(f"\narchived 600 {'cd' * 32}\n")
    assert PurgeRecord.parse(hot.body()) == hot
    with pytest.raises(NoteError, match="archive line"):
        PurgeRecord.parse(hot.body().replace("archived 600", "archived six"))
