"""What a Merkle leaf commits to: the canonical metadata of one stored row.

A leaf is the canonical JSON of a row's metadata (position, ids, type, producer,
the three times, retention) plus the SHA-256 and length of the exact stored
bytes, not the bytes themselves. That split is what lets retention work without
breaking verification: a purge deletes the row (the payload) but keeps this leaf
text in a tombstone, so its leaf hash can still be recomputed, and the tombstone
shows `retain_until` had passed — see docs/audit.md. A row that kept only a
prefix of an oversize record (`received_len` set) adds that length to its leaf,
next to `received_sha256`, the digest of the full record (docs/hostile-input.md);
other leaves are unchanged, so leaves written before that keep their hashes.

The leaf is canonical JSON (`contracts.canonical_json`: sorted keys, compact,
UTF-8, no floats) of a dict of strings, integers, booleans and None, with the
three times spelled as `leaf_time` spells them: RFC 3339 in UTC with `Z`,
microseconds omitted when zero (`2024-01-15T10:00:00.123456Z`). That is the
spelling of orjson's `OPT_UTC_Z`, the writer of every leaf so far, and it is
still orjson that writes them: the times go to it as UTC datetimes, sorted keys,
which costs a third of rendering each as text first (one leaf per event ingested,
bench/audit_ingest.py). The other values are str, int, bool or None by the row's
types, so there is no float to refuse. tests/unit/test_audit_leaf.py holds the
bytes equal to `canonical_json` of the leaf with its times as `leaf_time` text,
to the writer of the first leaves, and to a golden hash.

Pure: canonical JSON and SHA-256 only.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import orjson

from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import as_utc

__all__ = ["LEAF_VERSION", "leaf_bytes", "leaf_time"]

LEAF_VERSION = 1


def leaf_time(moment: datetime) -> str:
    """A time as leaves spell it: RFC 3339 in UTC, `Z`, microseconds only when not zero.

    `2024-01-15T10:00:00.123456Z`, `2024-01-15T10:00:00Z`: the spelling orjson's
    `OPT_UTC_Z` gave every leaf written so far (leaf hashes in stores and signed
    checkpoints depend on it). Not `times.render_time`, which always writes microseconds.
    """
    return as_utc(moment).replace(tzinfo=None).isoformat() + "Z"


def leaf_bytes(row: AuditRow, *, raw_digest: tuple[str, int] | None = None) -> bytes:
    """The leaf: canonical JSON of the row's metadata and the digest of its stored bytes.

    `raw_digest` (hex SHA-256, length) stands for the bytes when they are not the stored
    ones: the leaf of a row redacted after it was committed (audit_sink/domain/redaction.py).
    """
    raw_sha256, raw_len = raw_digest or (hashlib.sha256(row.raw).hexdigest(), len(row.raw))
    # Only str, int, bool and None, and UTC times, which OPT_UTC_Z spells as `leaf_time` does.
    leaf: dict[str, str | int | bool | datetime | None] = {
        "v": LEAF_VERSION,
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "request_id": row.request_id,
        "producer": row.producer,
        "occurred_at": _utc(row.occurred_at),
        "recorded_at": _utc(row.recorded_at),
        "retain_until": _utc(row.retain_until),
        "key": base64.b64encode(row.record_key).decode() if row.record_key is not None else None,
        "raw_sha256": raw_sha256,
        "raw_len": raw_len,
        "decode_error": row.decode_error,
        "redacted": bool(row.redacted),
        "received_sha256": row.received_sha256,
    }
    if row.received_len is not None:
        leaf["received_len"] = row.received_len
    return orjson.dumps(leaf, option=_LEAF_JSON)


_LEAF_JSON = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


def _utc(moment: datetime) -> datetime:
    """The instant in UTC as a plain `datetime`: orjson writes no subclass of it (a test clock's)."""
    moment = as_utc(moment)
    if type(moment) is datetime:
        return moment
    return datetime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=moment.tzinfo,
    )
