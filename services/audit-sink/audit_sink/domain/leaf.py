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

Pure: canonical JSON and SHA-256 only.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import as_utc

__all__ = ["LEAF_VERSION", "leaf_bytes"]

LEAF_VERSION = 1


_LEAF_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
"""Times in a leaf are RFC 3339 in UTC as orjson writes them: `2024-01-15T10:00:00.123456Z`
(microseconds omitted when zero). One function writes leaves, so one spelling is all there is."""


def leaf_bytes(row: AuditRow, *, raw_digest: tuple[str, int] | None = None) -> bytes:
    """The leaf: canonical JSON of the row's metadata and the digest of its stored bytes.

    `raw_digest` (hex SHA-256, length) stands for the bytes when they are not the stored
    ones: the leaf of a row redacted after it was committed (audit_sink/domain/redaction.py).
    """
    raw_sha256, raw_len = raw_digest or (hashlib.sha256(row.raw).hexdigest(), len(row.raw))
    # The same bytes as contracts.canonical_json (orjson, sorted keys); its float check is
    # skipped because every value here is a str, int, bool or None by construction.
    leaf: dict[str, object] = {
        "v": LEAF_VERSION,
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "request_id": row.request_id,
        "producer": row.producer,
        "occurred_at": as_utc(row.occurred_at),
        "recorded_at": as_utc(row.recorded_at),
        "retain_until": as_utc(row.retain_until),
        "key": base64.b64encode(row.record_key).decode() if row.record_key is not None else None,
        "raw_sha256": raw_sha256,
        "raw_len": raw_len,
        "decode_error": row.decode_error,
        "redacted": bool(row.redacted),
        "received_sha256": row.received_sha256,
    }
    if row.received_len is not None:
        leaf["received_len"] = row.received_len
    return orjson.dumps(leaf, option=_LEAF_OPTIONS)
