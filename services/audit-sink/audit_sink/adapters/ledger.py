"""Reading the audit store as evidence, and its privileged paths: legal hold and purge.

`snapshot()` reads everything `audit_sink.domain.verify` needs, checking each
checkpoint and purge note with the verifier key it is given (never a key the
store itself holds). Checkpoints announced on `atb.audit` and stored as rows are
checked too: deleting one from `audit_checkpoints` does not hide it.

`place_hold`, `release_hold` and `purge` run with the purger role's
credentials; the database triggers refuse a purge of anything not past
`retain_until` or under a legal hold, whatever this code asks for.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, and_, exists, not_, or_, select

from audit_sink.adapters.db import (
    audit_archive_seals,
    audit_checkpoints,
    audit_events,
    audit_leaves,
    audit_legal_hold_releases,
    audit_legal_holds,
    audit_purges,
    audit_tombstones,
    audit_tree,
)
from audit_sink.adapters.signing import NoteSigner, verify_note
from audit_sink.domain.checkpoint import Checkpoint, NoteError, PurgeRecord, VerifierKey
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import Frontier
from audit_sink.domain.redaction import REDACTION_TOPIC, RedactionEntry, committed_leaf, entries_by_leaf
from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import as_utc
from audit_sink.domain.verify import LeafEntry, StoreSnapshot, Tombstone
from contracts import EventDecodeError, decode_envelope

__all__ = [
    "CHECKPOINT_AUDIT_TYPE",
    "HOLD_AUDIT_TYPE",
    "PURGE_AUDIT_TYPE",
    "RELEASE_AUDIT_TYPE",
    "ArchiveSeal",
    "HoldScope",
    "PurgeOutcome",
    "active_holds",
    "announced_notes",
    "iter_rows",
    "place_hold",
    "purge",
    "redactions",
    "release_hold",
    "snapshot",
    "stored_leaf",
]

CHECKPOINT_AUDIT_TYPE = "audit_checkpoint_signed"
HOLD_AUDIT_TYPE = "audit_legal_hold_placed"
RELEASE_AUDIT_TYPE = "audit_legal_hold_released"
PURGE_AUDIT_TYPE = "audit_purged"

_ROW_COLUMNS = (
    audit_events.c.seq,
    audit_events.c.topic,
    audit_events.c.partition,
    audit_events.c.offset,
    audit_events.c.event_id,
    audit_events.c.event_type,
    audit_events.c.request_id,
    audit_events.c.producer,
    audit_events.c.occurred_at,
    audit_events.c.recorded_at,
    audit_events.c.retain_until,
    audit_events.c.record_key,
    audit_events.c.raw,
    audit_events.c.decode_error,
    audit_events.c.redacted,
    audit_events.c.received_sha256,
    audit_events.c.received_len,
    audit_events.c.audit_type,
)


def _row(values: Sequence[object]) -> tuple[int, AuditRow]:
    seq, topic, partition, offset, event_id, event_type, request_id, producer, occurred, recorded, retain = values[:11]
    key, raw, decode_error, redacted, received, received_len, audit_type = values[11:]
    row = AuditRow(
        topic=str(topic),
        partition=int(partition),  # type: ignore[call-overload]
        offset=int(offset),  # type: ignore[call-overload]
        event_id=str(event_id),
        event_type=str(event_type),
        request_id=request_id,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
        occurred_at=as_utc(occurred),  # type: ignore[arg-type]
        recorded_at=as_utc(recorded),  # type: ignore[arg-type]
        retain_until=as_utc(retain),  # type: ignore[arg-type]
        record_key=bytes(key) if key is not None else None,  # type: ignore[call-overload]
        raw=bytes(raw),  # type: ignore[call-overload]
        decode_error=decode_error,  # type: ignore[arg-type]
        redacted=bool(redacted),
        received_sha256=received,  # type: ignore[arg-type]
        received_len=int(received_len) if received_len is not None else None,  # type: ignore[call-overload]
        audit_type=audit_type,  # type: ignore[arg-type]
    )
    return int(seq), row  # type: ignore[call-overload]


def iter_rows(
    engine: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id: str | None = None,
    event_id: str | None = None,
) -> Iterator[tuple[int, AuditRow]]:
    """Stored rows in insertion order, optionally filtered by occurred-at and request id."""
    query = select(*_ROW_COLUMNS).order_by(audit_events.c.seq)
    if since is not None:
        query = query.where(audit_events.c.occurred_at >= as_utc(since))
    if until is not None:
        query = query.where(audit_events.c.occurred_at < as_utc(until))
    if request_id is not None:
        query = query.where(audit_events.c.request_id == request_id)
    if event_id is not None:
        query = query.where(audit_events.c.event_id == event_id)
    with engine.connect() as conn:
        for values in conn.execute(query.execution_options(yield_per=2000)):
            yield _row(tuple(values))


def redactions(conn: Connection) -> dict[int, RedactionEntry]:
    """The redaction entries of the stored redaction records (migration 0006), by the leaf they redact."""
    query = select(audit_events.c.leaf_idx, audit_events.c.raw).where(
        audit_events.c.topic == REDACTION_TOPIC, audit_events.c.leaf_idx.is_not(None)
    )
    entries, _ = entries_by_leaf({int(i): bytes(raw) for i, raw in conn.execute(query)})
    return entries


def stored_leaf(row: AuditRow, entry: RedactionEntry | None) -> bytes:
    """The leaf text the tree holds for a row: its own, or the one it had before a later redaction."""
    return committed_leaf(row, entry) if entry is not None else leaf_bytes(row)


def snapshot(engine: Engine, key: VerifierKey) -> tuple[StoreSnapshot, list[str]]:
    """Everything the verifier needs, and the notes that failed their signature check."""
    problems: list[str] = []
    with engine.connect() as conn:
        leaves = [
            LeafEntry(int(i), (t, int(p), int(o)), bytes(h))
            for i, t, p, o, h in conn.execute(
                select(
                    audit_tree.c.idx,
                    audit_tree.c.topic,
                    audit_tree.c.partition,
                    audit_tree.c.offset,
                    audit_tree.c.leaf_hash,
                ).order_by(audit_tree.c.idx)
            )
        ]
        stones = [
            Tombstone(int(i), bytes(leaf), str(pid))
            for i, leaf, pid in conn.execute(
                select(audit_tombstones.c.leaf_idx, audit_tombstones.c.leaf, audit_tombstones.c.purge_id)
            )
        ]
        stored_notes = [n for (n,) in conn.execute(select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.id))]
        purge_notes = [(str(i), n) for i, n in conn.execute(select(audit_purges.c.id, audit_purges.c.note))]
    rows = list(iter_rows(engine))
    notes = list(dict.fromkeys([*stored_notes, *_announced_checkpoints(rows)]))
    checkpoints = _checked(notes, key, problems)
    purges = _checked_purges(purge_notes, key, problems)
    return StoreSnapshot(leaves, rows, stones, checkpoints, purges, key.name), problems


def _announced_checkpoints(rows: Sequence[tuple[int, AuditRow]], audit_type: str = CHECKPOINT_AUDIT_TYPE) -> list[str]:
    """The `checkpoint` notes of the stored AuditEvents `audit_type` (the sink's announcements)."""
    notes: list[str] = []
    needle = audit_type.encode()
    for _, row in rows:
        if needle not in row.raw:
            continue
        try:
            data = decode_envelope(row.raw).data
        except EventDecodeError:
            continue
        details = data.get("details")
        if data.get("audit_type") == audit_type and isinstance(details, dict):
            note = details.get("checkpoint")
            if isinstance(note, str):
                notes.append(note)
    return notes


def announced_notes(engine: Engine, audit_type: str) -> list[str]:
    """The notes the sink announced as AuditEvents `audit_type` and the store kept as rows."""
    return _announced_checkpoints(list(iter_rows(engine)), audit_type)


def _checked(notes: Sequence[str], key: VerifierKey, problems: list[str]) -> list[Checkpoint]:
    checkpoints: list[Checkpoint] = []
    for note in notes:
        try:
            checkpoints.append(Checkpoint.parse(verify_note(note, key).text))
        except NoteError as exc:
            problems.append(f"checkpoint note rejected: {exc}")
    return checkpoints


def _checked_purges(notes: Sequence[tuple[str, str]], key: VerifierKey, problems: list[str]) -> list[PurgeRecord]:
    records: list[PurgeRecord] = []
    for purge_id, note in notes:
        try:
            record = PurgeRecord.parse(verify_note(note, key).text)
        except NoteError as exc:
            problems.append(f"purge record {purge_id} rejected: {exc}")
            continue
        if record.purge_id != purge_id:
            problems.append(f"purge record {purge_id} is signed for purge {record.purge_id}")
            continue
        records.append(record)
    return records


@dataclass(frozen=True)
class HoldScope:
    """A legal hold: one request id, or every event that occurred in [since, until)."""

    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        by_request = self.request_id is not None and self.since is None and self.until is None
        by_range = self.request_id is None and self.since is not None and self.until is not None
        if not (by_request or by_range):
            raise ValueError("a legal hold covers one request id, or a time range with both ends")
        if by_range and self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("a legal hold's range must end after it starts")


def place_hold(engine: Engine, scope: HoldScope, *, reason: str, actor: str) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            audit_legal_holds.insert().returning(audit_legal_holds.c.id),
            {
                "request_id": scope.request_id,
                "range_from": as_utc(scope.since) if scope.since else None,
                "range_until": as_utc(scope.until) if scope.until else None,
                "reason": reason,
                "placed_by": actor,
                "placed_at": datetime.now(UTC),
            },
        )
        return int(result.scalar_one())


def release_hold(engine: Engine, hold_id: int, *, reason: str, actor: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            audit_legal_hold_releases.insert(),
            {"hold_id": hold_id, "reason": reason, "released_by": actor, "released_at": datetime.now(UTC)},
        )


def active_holds(engine: Engine) -> list[tuple[int, str | None, datetime | None, datetime | None, str]]:
    released = exists().where(audit_legal_hold_releases.c.hold_id == audit_legal_holds.c.id)
    query = select(
        audit_legal_holds.c.id,
        audit_legal_holds.c.request_id,
        audit_legal_holds.c.range_from,
        audit_legal_holds.c.range_until,
        audit_legal_holds.c.reason,
    ).where(not_(released))
    with engine.connect() as conn:
        return [(int(i), r, f, u, str(why)) for i, r, f, u, why in conn.execute(query)]


@dataclass(frozen=True)
class PurgeOutcome:
    purge_id: str
    removed: int
    note: str
    held_back: int
    """Rows past retention that a legal hold kept."""


def _purgeable(now: datetime):  # type: ignore[no-untyped-def]  # a SQLAlchemy clause
    released = exists().where(audit_legal_hold_releases.c.hold_id == audit_legal_holds.c.id)
    held = exists().where(
        and_(
            not_(released),
            or_(
                audit_legal_holds.c.request_id == audit_events.c.request_id,
                and_(
                    audit_legal_holds.c.request_id.is_(None),
                    audit_events.c.occurred_at >= audit_legal_holds.c.range_from,
                    audit_events.c.occurred_at < audit_legal_holds.c.range_until,
                ),
            ),
        )
    )
    return audit_events.c.retain_until < now, held


@dataclass(frozen=True)
class ArchiveSeal:
    """The archive a hot purge verified: its first `tree_end` leaves have `root` (docs/archive.md)."""

    location: str
    seq: int
    """Its newest segment."""
    tree_end: int
    root: bytes
    manifest_sha256: str
    """Of its newest manifest: the head of its hash chain."""
    hot_before: datetime
    """Archived rows recorded before this leave the store; later ones stay hot."""


def purge(
    engine: Engine,
    signer: NoteSigner,
    *,
    actor: str,
    now: datetime | None = None,
    archived: ArchiveSeal | None = None,
) -> PurgeOutcome:
    """Delete the rows past `retain_until` not under a legal hold; tombstones and a signed record first.

    One transaction: the purge record, a tombstone per row (its leaf text, so the
    leaf hash stays recomputable), the leaf of each row that carries its own into
    `audit_leaves` (so the tree keeps it), then the deletes. The database refuses
    the tombstone and the delete of any row that does not qualify.

    With `archived` (hot retention), also the rows whose leaves are in that verified
    archive and that were recorded before `archived.hot_before`: the seal is recorded
    first (`audit_archive_seals`, what the database's triggers check) and named in the
    signed purge record.
    """
    now = as_utc(now or datetime.now(UTC))
    expired, held = _purgeable(now)
    if archived is not None:
        expired = or_(
            expired,
            and_(
                audit_events.c.leaf_idx < archived.tree_end,
                audit_events.c.recorded_at < as_utc(archived.hot_before),
            ),
        )
    purge_id = f"purge-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    joined = audit_events.join(
        audit_tree,
        and_(
            audit_tree.c.topic == audit_events.c.topic,
            audit_tree.c.partition == audit_events.c.partition,
            audit_tree.c.offset == audit_events.c.offset,
        ),
    )
    with engine.begin() as conn:
        query = (
            select(audit_tree.c.idx, audit_events.c.leaf_idx, *_ROW_COLUMNS)
            .select_from(joined)
            .where(expired, not_(held))
        )
        removed, own_leaves, seqs = [], [], []
        for values in conn.execute(query.order_by(audit_tree.c.idx)):
            seq, row = _row(tuple(values[2:]))
            removed.append((int(values[0]), row))
            seqs.append(seq)
            if values[1] is not None:
                own_leaves.append(int(values[0]))
        # A redaction record stays while a row it redacted is stored (one under a legal hold, say):
        # that row's leaf is rebuilt from it. Its own retention ends no earlier than theirs (migration 0006).
        entries = redactions(conn)
        gone = {i for i, _ in removed} | set(conn.execute(select(audit_tombstones.c.leaf_idx)).scalars())
        needed = {entry.record for leaf, entry in entries.items() if leaf not in gone}
        kept = [seq for seq, (i, _) in zip(seqs, removed, strict=True) if i in needed]
        removed = [(i, r) for i, r in removed if i not in needed]
        held_back = len(conn.execute(select(audit_events.c.seq).where(expired, held)).all())
        leaf_hashes = [bytes(h) for (h,) in conn.execute(select(audit_tree.c.leaf_hash).order_by(audit_tree.c.idx))]
        record = PurgeRecord(
            origin=signer.name,
            purge_id=purge_id,
            purged_at=now.isoformat(),
            tree_size=len(leaf_hashes),
            root=Frontier.of(leaf_hashes).root(),
            count=len(removed),
            digest=PurgeRecord.digest_of([(i, leaf_hashes[i]) for i, _ in removed]),
            archived_end=archived.tree_end if archived is not None else None,
            archive_head=archived.manifest_sha256 if archived is not None else None,
        )
        note = signer.sign(record.body()).render()
        if archived is not None:
            conn.execute(
                audit_archive_seals.insert(),
                {
                    "location": archived.location,
                    "seq": archived.seq,
                    "tree_end": archived.tree_end,
                    "root_hash": archived.root,
                    "manifest_sha256": archived.manifest_sha256,
                    "verified_at": now,
                },
            )
        conn.execute(
            audit_purges.insert(),
            {"id": purge_id, "purged_at": now, "purged_by": actor, "removed": len(removed), "note": note},
        )
        if removed:
            conn.execute(
                audit_tombstones.insert(),
                [
                    {
                        "leaf_idx": i,
                        "purge_id": purge_id,
                        "topic": r.topic,
                        "partition": r.partition,
                        "offset": r.offset,
                        "leaf": stored_leaf(r, entries.get(i)),
                    }
                    for i, r in removed
                ],
            )
            carried = set(own_leaves)
            if carried:
                conn.execute(
                    audit_leaves.insert(),
                    [
                        {
                            "idx": i,
                            "topic": r.topic,
                            "partition": r.partition,
                            "offset": r.offset,
                            "leaf_hash": leaf_hashes[i],
                        }
                        for i, r in removed
                        if i in carried
                    ],
                )
            # The same predicate as the selection: the trigger refuses any row without its tombstone.
            conn.execute(audit_events.delete().where(expired, not_(held), audit_events.c.seq.not_in(kept)))
    return PurgeOutcome(purge_id, len(removed), note, held_back)
