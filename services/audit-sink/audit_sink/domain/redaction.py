"""Bearer tokens never reach the audit store: what is removed, and how a later redaction stays verifiable.

Two events carry a live credential: a `PoaIssued` (the `token` the agent will
present; its `token_sha256` stays) and an `ActionRequested` (the `poa` the agent
presented; it becomes `sha256:<hex>` of the token, the same digest as the
issuance's `token_sha256`, so the two still join). `redact` gives the stored
bytes. At ingest the row keeps them with `redacted` and `received_sha256` (the
digest of the bytes received), and its leaf commits to the stored bytes.

Rows stored before a redaction rule existed already have a leaf, signed in
checkpoints, over the digest of the original bytes. Migration 0006 rewrites
their bytes and appends one *redaction record* per batch: an `AuditEvent`
(`audit_redacted`) stored at a position no Kafka record can have
(`REDACTION_TOPIC`, whose `:` Kafka forbids in a topic name), so it is a leaf of
the tree like any row. Per redacted leaf it binds the original digest and length
(what the old leaf commits to) to the digest and length of the stored bytes.
The row keeps its old leaf hash; `committed_leaf` rebuilds that leaf from the
row's metadata and the record. So old checkpoints and proofs keep verifying,
and once a checkpoint covers the record, the stored bytes can no longer be
swapped: they must hash to what the record says (docs/audit.md).

Pure: JSON and SHA-256 only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.rows import AuditRow, bounded
from audit_sink.domain.times import as_utc
from audit_sink.domain.tokens import DIGEST, is_redacted_payload, sha256_text
from contracts import AuditEvent, EventDecodeError, decode_envelope

__all__ = [
    "REDACTION_AUDIT_TYPE",
    "REDACTION_TOPIC",
    "RedactionEntry",
    "committed_leaf",
    "entries_by_leaf",
    "is_redaction_record",
    "redaction_details",
    "redaction_entries",
    "redaction_problem",
]

REDACTION_TOPIC = "atb-audit-store:redactions"
"""The topic of redaction records: not a Kafka topic name (`:`), so no consumed record can take its place."""
REDACTION_AUDIT_TYPE = "audit_redacted"
REDACTION_FORMAT = "atb-audit-redaction/1"


@dataclass(frozen=True)
class RedactionEntry:
    """One redacted leaf: the original bytes' digest and length (what its leaf commits to) and the stored ones."""

    leaf: int
    received_sha256: str
    received_len: int
    raw_sha256: str
    raw_len: int
    record: int = -1
    """Leaf index of the redaction record that lists it (set by `redaction_entries`)."""

    def as_json(self) -> dict[str, object]:
        return {
            "leaf": self.leaf,
            "received_sha256": self.received_sha256,
            "received_len": self.received_len,
            "raw_sha256": self.raw_sha256,
            "raw_len": self.raw_len,
        }


def redaction_details(entries: Iterable[RedactionEntry], *, reason: str, migration: str) -> dict[str, object]:
    """The `details` of a redaction record (an AuditEvent `audit_redacted`)."""
    return {
        "format": REDACTION_FORMAT,
        "migration": migration,
        "reason": reason,
        "redactions": [entry.as_json() for entry in entries],
    }


def is_redaction_record(row: AuditRow) -> bool:
    return row.topic == REDACTION_TOPIC and row.event_type == AuditEvent.event_type


def redaction_entries(record_leaf: int, raw: bytes) -> list[RedactionEntry]:
    """The entries of one redaction record's stored bytes; ValueError if they are not one."""
    try:
        data = decode_envelope(raw).data
    except EventDecodeError as exc:
        raise ValueError(f"redaction record does not decode: {exc}") from exc
    details = data.get("details")
    if data.get("audit_type") != REDACTION_AUDIT_TYPE or not isinstance(details, dict):
        raise ValueError("not an audit_redacted record")
    if details.get("format") != REDACTION_FORMAT or not isinstance(details.get("redactions"), list):
        raise ValueError(f"redaction record is not {REDACTION_FORMAT}")
    entries = []
    items: list[Any] = list(details["redactions"])  # type: ignore[arg-type]  # checked: a list
    for item in items:
        try:
            entry = RedactionEntry(
                leaf=int(item["leaf"]),
                received_sha256=str(item["received_sha256"]),
                received_len=int(item["received_len"]),
                raw_sha256=str(item["raw_sha256"]),
                raw_len=int(item["raw_len"]),
                record=record_leaf,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed redaction entry: {exc}") from exc
        if not 0 <= entry.leaf < record_leaf:
            raise ValueError(f"redaction record {record_leaf} names leaf {entry.leaf}, not an earlier one")
        if not (DIGEST.match(entry.received_sha256) and DIGEST.match(entry.raw_sha256)):
            raise ValueError(f"redaction of leaf {entry.leaf}: digests must be sha256:<hex>")
        entries.append(entry)
    return entries


def committed_leaf(row: AuditRow, entry: RedactionEntry) -> bytes:
    """The leaf the row had before its redaction: its metadata, unredacted, over the original bytes' digest."""
    digest = (entry.received_sha256.removeprefix("sha256:"), entry.received_len)
    return leaf_bytes(row._replace(redacted=False, received_sha256=None), raw_digest=digest)


def redaction_problem(row: AuditRow, entry: RedactionEntry) -> str:
    """Why this stored row is not the redaction `entry` describes ('' when it is).

    The stored bytes must hash to what the record says, the row must say it was
    redacted from the bytes the leaf committed to, and the bytes must be that very
    event (id, type, subject, producer, time) with its token field holding a digest:
    a redaction can only have replaced the payload of the event the leaf names.
    """
    if not row.redacted or row.received_sha256 != entry.received_sha256 or row.received_len is not None:
        return "redaction fields differ from its redaction record"
    if sha256_text(row.raw) != entry.raw_sha256 or len(row.raw) != entry.raw_len:
        return "stored bytes differ from those its redaction record commits to"
    try:
        envelope = decode_envelope(row.raw)
    except EventDecodeError as exc:
        return f"redacted bytes do not decode: {exc}"
    same = (
        bounded(envelope.id, 255) == row.event_id
        and envelope.type == row.event_type
        and (bounded(envelope.subject, 255) if envelope.subject is not None else None) == row.request_id
        and bounded(envelope.source, 2048) == row.producer
        and as_utc(envelope.time) == row.occurred_at
    )
    if not same:
        return "redacted bytes are not the event its leaf names"
    if not is_redacted_payload(row.event_type, row.raw):
        return "redacted bytes still carry a token, or are of an event type without one"
    return ""


def entries_by_leaf(records: Mapping[int, bytes]) -> tuple[dict[int, RedactionEntry], list[str]]:
    """Every redaction entry by redacted leaf, from records (leaf index → stored bytes); and the problems."""
    out: dict[int, RedactionEntry] = {}
    problems: list[str] = []
    for index, raw in sorted(records.items()):
        try:
            entries = redaction_entries(index, raw)
        except ValueError as exc:
            problems.append(f"redaction record at leaf {index} is unusable: {exc}")
            continue
        for entry in entries:
            if entry.leaf in out:
                problems.append(f"leaf {entry.leaf} is redacted twice (records {out[entry.leaf].record} and {index})")
                continue
            out[entry.leaf] = entry
    return out, problems
