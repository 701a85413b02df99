"""audit_sink.domain.leaf: leaves are canonical JSON, byte for byte what was always written.

Stored rows and signed checkpoints commit to leaf hashes, so the bytes of a leaf
must never change. `_reference_leaf` is the writer every leaf so far came from
(orjson, sorted keys, `OPT_UTC_Z` datetimes); the table and the golden hash hold
`leaf_bytes` to it.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit_sink.domain.leaf import LEAF_VERSION, leaf_bytes, leaf_time
from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import as_utc
from contracts import canonical_json

T0 = datetime(2026, 1, 15, 12, 0, 0, 123456, tzinfo=UTC)


def _reference_leaf(row: AuditRow) -> bytes:
    """The leaf writer before leaves went through contracts.canonical_json (kept here as the oracle)."""
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
        "raw_sha256": hashlib.sha256(row.raw).hexdigest(),
        "raw_len": len(row.raw),
        "decode_error": row.decode_error,
        "redacted": bool(row.redacted),
        "received_sha256": row.received_sha256,
    }
    if row.received_len is not None:
        leaf["received_len"] = row.received_len
    return orjson.dumps(leaf, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


def row(**changes: Any) -> AuditRow:
    base = AuditRow(
        topic="atb.poa.requests",
        partition=3,
        offset=41,
        event_id="6f1c2a9e-0b3d-4c55-9a1e-7d2f8b6c4e10",
        event_type="atb.poa.issuance_requested.v1",
        request_id="req-1",
        producer="spiffe://atb.local/agent/crm-bot",
        occurred_at=T0,
        recorded_at=T0 + timedelta(seconds=1),
        retain_until=T0 + timedelta(days=7 * 365),
        record_key=b"req-1",
        raw=b'{"hello":"world"}',
        decode_error=None,
    )
    return base._replace(**changes)


CASES = {
    "plain": row(),
    "whole seconds": row(occurred_at=datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),
    "naive (SQLite)": row(recorded_at=datetime(2026, 1, 15, 12, 0, 1, 5)),
    "another offset": row(occurred_at=datetime(2026, 1, 15, 13, 0, tzinfo=timezone(timedelta(hours=1)))),
    "saturated retention": row(retain_until=datetime.max.replace(tzinfo=UTC)),
    "early year": row(occurred_at=datetime(999, 5, 5, 1, 2, 3, 4, tzinfo=UTC)),
    "undecodable, no key": row(
        record_key=None, request_id=None, producer=None, decode_error="not JSON", event_type="undecodable"
    ),
    "redacted": row(redacted=True, received_sha256="sha256:" + "ab" * 32),
    "oversize prefix": row(received_sha256="sha256:" + "cd" * 32, received_len=9_000_000),
    "unicode": row(request_id="réq-ß-\u2603", producer="spiffe://atb.local/agent/\u00e9"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_leaf_bytes_are_the_bytes_always_written(case: AuditRow) -> None:
    assert leaf_bytes(case) == _reference_leaf(case)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_leaf_bytes_are_canonical_json_of_the_leaf_they_spell(case: AuditRow) -> None:
    leaf = leaf_bytes(case)
    assert canonical_json(orjson.loads(leaf)) == leaf


def test_golden_leaf() -> None:
    leaf = leaf_bytes(row())
    assert leaf.startswith(b'{"decode_error":null,"event_id":"6f1c2a9e-0b3d-4c55-9a1e-7d2f8b6c4e10",')
    assert b'"occurred_at":"2026-01-15T12:00:00.123456Z"' in leaf
    assert hashlib.sha256(leaf).hexdigest() == GOLDEN_SHA256


GOLDEN_SHA256 = "1f967022358d332b5232e83da2d5e71c7e2e925c8e56a218a79a31180a224a0f"
"""SHA-256 of `leaf_bytes(row())` as the orjson writer produced it (computed before the change)."""


@pytest.mark.parametrize(
    ("moment", "spelled"),
    [
        (datetime(2026, 1, 15, 10, 0, tzinfo=UTC), "2026-01-15T10:00:00Z"),
        (datetime(2026, 1, 15, 10, 0, 0, 120000, tzinfo=UTC), "2026-01-15T10:00:00.120000Z"),
        (datetime(2026, 1, 15, 10, 0), "2026-01-15T10:00:00Z"),
        (datetime(2026, 1, 15, 11, 0, tzinfo=timezone(timedelta(hours=1))), "2026-01-15T10:00:00Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
    ],
)
def test_leaf_time(moment: datetime, spelled: str) -> None:
    assert leaf_time(moment) == spelled


@given(st.datetimes(timezones=st.just(UTC)))
def test_leaf_time_spells_times_as_orjson_did(moment: datetime) -> None:
    assert leaf_time(moment) == orjson.dumps(moment, option=orjson.OPT_UTC_Z).decode()[1:-1]


def _text_times_leaf(row: AuditRow) -> bytes:
    """The leaf as canonical_json of strings: every time rendered by `leaf_time` first (the other oracle)."""
    leaf = orjson.loads(_reference_leaf(row))
    for name in ("occurred_at", "recorded_at", "retain_until"):
        leaf[name] = leaf_time(getattr(row, name))
    return canonical_json(leaf)


class _Subclassed(datetime):
    """A datetime subclass (tests/service/clock.py makes such): orjson would refuse to write it."""


_ZONES: st.SearchStrategy[tzinfo] = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))]
)
_LOW, _HIGH = datetime(1, 1, 2), datetime(9999, 12, 30)
_TIMES = st.datetimes(_LOW, _HIGH) | st.datetimes(_LOW, _HIGH, timezones=_ZONES)  # naive too (SQLite's)
_TEXT = st.text(max_size=40)


@given(
    occurred=_TIMES,
    recorded=_TIMES,
    retain=_TIMES | st.just(datetime.max.replace(tzinfo=UTC)),
    whole=st.booleans(),
    key=st.none() | st.binary(max_size=20),
    request_id=st.none() | _TEXT,
    producer=st.none() | _TEXT,
    error=st.none() | _TEXT,
    received_len=st.none() | st.integers(0, 2**40),
    offset=st.integers(0, 2**62),
)
def test_leaf_bytes_equal_canonical_json_of_text_times_for_any_row(
    occurred: datetime,
    recorded: datetime,
    retain: datetime,
    whole: bool,
    key: bytes | None,
    request_id: str | None,
    producer: str | None,
    error: str | None,
    received_len: int | None,
    offset: int,
) -> None:
    """The leaf's times go to orjson as datetimes; the bytes are those of their `leaf_time` text."""
    if whole:
        occurred = occurred.replace(microsecond=0)
    case = row(
        occurred_at=occurred,
        recorded_at=recorded,
        retain_until=retain,
        record_key=key,
        request_id=request_id,
        producer=producer,
        decode_error=error,
        received_len=received_len,
        offset=offset,
    )
    assert leaf_bytes(case) == _text_times_leaf(case) == _reference_leaf(case)
    # The same instant as a datetime subclass (a test clock makes such): the same leaf.
    subclassed = case._replace(recorded_at=_Subclassed.fromisoformat(recorded.isoformat()))
    assert type(subclassed.recorded_at) is _Subclassed
    assert leaf_bytes(subclassed) == leaf_bytes(case)
