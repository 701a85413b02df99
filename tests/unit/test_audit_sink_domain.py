"""audit_sink.domain: how long a row is kept (docs/architecture.md §2.8), and what a row holds for any record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from audit_sink.domain.facets import Facets, facets_of
from audit_sink.domain.retention import DEFAULT_YEARS, RetentionPolicy, add_years
from audit_sink.domain.rows import UNDECODABLE, RecordMeta, row_for
from audit_sink.domain.tokens import audit_name
from contracts import AuditEvent, SigningKeyPublished, encode_envelope, make_envelope

RECORDED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EVENT_TIME = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
SOURCE = "spiffe://atb.example/service/issuer"


def test_default_retention_is_seven_years() -> None:
    assert DEFAULT_YEARS == 7
    assert RetentionPolicy().default_years == 7


@pytest.mark.parametrize(
    ("moment", "years", "expected"),
    [
        (datetime(2024, 3, 1, tzinfo=UTC), 7, datetime(2031, 3, 1, tzinfo=UTC)),
        (datetime(2024, 2, 29, 13, 5, tzinfo=UTC), 7, datetime(2031, 2, 28, 13, 5, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 4, datetime(2028, 2, 29, tzinfo=UTC)),
        (datetime(2024, 2, 28, tzinfo=UTC), 7, datetime(2031, 2, 28, tzinfo=UTC)),
        (
            datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            7,
            datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        (datetime(2024, 1, 1), 1, datetime(2025, 1, 1)),
    ],
)
def test_add_years(moment: datetime, years: int, expected: datetime) -> None:
    assert add_years(moment, years) == expected
    assert add_years(moment, years).tzinfo is moment.tzinfo


@pytest.mark.parametrize(
    ("event_type", "occurred", "expected"),
    [
        ("atb.poa.issued.v1", datetime(2024, 3, 1, tzinfo=UTC), datetime(2031, 3, 1, tzinfo=UTC)),
        ("atb.poa.issued.v1", datetime(2024, 2, 29, tzinfo=UTC), datetime(2031, 2, 28, tzinfo=UTC)),
        (UNDECODABLE, datetime(2024, 3, 1, tzinfo=UTC), datetime(2031, 3, 1, tzinfo=UTC)),
        ("atb.broker.action_requested.v1", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 5, 30, tzinfo=UTC)),
        ("atb.audit.event.v1", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)),
    ],
)
def test_retain_until_with_per_type_override(event_type: str, occurred: datetime, expected: datetime) -> None:
    policy = RetentionPolicy(days_by_event_type={"atb.broker.action_requested.v1": 90, "atb.audit.event.v1": 1})
    assert policy.retain_until(event_type, occurred) == expected


@pytest.mark.parametrize(
    ("years", "days"),
    [
        pytest.param(0, {}, id="zero years"),
        pytest.param(-7, {}, id="negative years"),
        pytest.param(7, {"atb.poa.issued.v1": 0}, id="zero days"),
        pytest.param(7, {"atb.poa.issued.v1": -1}, id="negative days"),
        pytest.param(7, {"ok": 30, "bad": 0}, id="one bad among good"),
    ],
)
def test_policy_rejects_less_than_one(years: int, days: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least one"):
        RetentionPolicy(default_years=years, days_by_event_type=days)


@pytest.mark.parametrize(("years", "days"), [(1, {}), (7, {"x": 1}), (10, {"x": 3650})])
def test_policy_accepts_one_and_more(years: int, days: dict[str, int]) -> None:
    assert RetentionPolicy(default_years=years, days_by_event_type=days).default_years == years


def _event_bytes(**envelope_changes: object) -> bytes:
    payload = AuditEvent(
        audit_type="poa_issued", request_id="req-0001", actor=SOURCE, outcome="success", occurred_at=EVENT_TIME
    )
    body = json.loads(encode_envelope(make_envelope(payload, source=SOURCE, event_id="evt-1", time=EVENT_TIME)))
    body.update(envelope_changes)
    # Not canonical on purpose: pretty-printed, keys unsorted. The row must keep these bytes, not re-encode them.
    return json.dumps(dict(reversed(body.items())), indent=2, ensure_ascii=True).encode()


def _meta(value: bytes | None, *, key: bytes | None = b"req-0001", timestamp_ms: int = 1_700_000_000_000) -> RecordMeta:
    return RecordMeta(topic="t1.atb.audit", partition=2, offset=41, key=key, value=value, timestamp_ms=timestamp_ms)


def test_row_for_valid_envelope() -> None:
    raw = _event_bytes()
    policy = RetentionPolicy()
    row = row_for(_meta(raw), recorded_at=RECORDED, retention=policy)
    assert row.raw == raw
    assert (row.topic, row.partition, row.offset, row.record_key) == ("t1.atb.audit", 2, 41, b"req-0001")
    assert row.event_id == "evt-1"
    assert row.event_type == "atb.audit.event.v1"
    assert row.request_id == "req-0001"
    assert row.producer == SOURCE
    assert row.occurred_at == EVENT_TIME
    assert row.recorded_at == RECORDED
    assert row.retain_until == datetime(2031, 1, 15, 10, 0, tzinfo=UTC)
    assert row.decode_error is None


def test_row_for_event_without_subject() -> None:
    payload = SigningKeyPublished(
        kid="kid-1", alg="EdDSA", jwk={"kty": "OKP"}, issuer=SOURCE, not_before=EVENT_TIME, retire_after=None
    )
    raw = encode_envelope(make_envelope(payload, source=SOURCE, event_id="evt-k", time=EVENT_TIME))
    row = row_for(_meta(raw, key=b"kid-1"), recorded_at=RECORDED, retention=RetentionPolicy())
    assert row.request_id is None
    assert row.event_type == "atb.keys.signing_key_published.v1"
    assert row.raw == raw


def test_row_for_uses_the_per_type_retention() -> None:
    policy = RetentionPolicy(days_by_event_type={"atb.audit.event.v1": 90})
    row = row_for(_meta(_event_bytes()), recorded_at=RECORDED, retention=policy)
    assert row.retain_until == EVENT_TIME + timedelta(days=90)


def test_row_for_keeps_an_envelope_without_timezone_as_undecodable() -> None:
    # CloudEvents `time` is RFC 3339: a time without an offset is not valid.
    row = row_for(_meta(_event_bytes(time="2024-01-15T10:00:00")), recorded_at=RECORDED, retention=RetentionPolicy())
    assert row.event_type == "undecodable"
    assert row.decode_error is not None
    assert "timezone" in row.decode_error


@pytest.mark.parametrize(
    ("time_text", "expected"),
    [
        ("2024-01-15T12:00:00+02:00", datetime(2024, 1, 15, 10, 0, tzinfo=UTC)),
        ("2024-01-15T10:00:00.123456Z", datetime(2024, 1, 15, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_row_for_time_is_aware(time_text: str, expected: datetime) -> None:
    row = row_for(_meta(_event_bytes(time=time_text)), recorded_at=RECORDED, retention=RetentionPolicy())
    assert row.occurred_at == expected
    assert row.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(b"garbage \x00\xff", "invalid_envelope", id="garbage bytes"),
        pytest.param(None, "empty_record", id="None value"),
        pytest.param(b"", "invalid_envelope", id="empty bytes"),
        pytest.param(b"{}", "invalid_envelope", id="empty object"),
        pytest.param(b"null", "invalid_envelope", id="JSON null"),
        pytest.param(b"\xff\xfe{", "invalid_envelope", id="not UTF-8"),
        pytest.param(b"[" * 100_000, "invalid_envelope", id="deep nesting"),
        pytest.param(b" " * (512 * 1024), "invalid_envelope", id="at the size bound"),
        pytest.param(_event_bytes(specversion="0.3"), "invalid_envelope", id="wrong specversion"),
        pytest.param(_event_bytes(type="Atb.audit.event.v1"), "invalid_envelope", id="bad type"),
        pytest.param(_event_bytes(extra=1), "invalid_envelope", id="unknown attribute"),
    ],
)
def test_row_for_undecodable_record(value: bytes | None, error: str) -> None:
    row = row_for(_meta(value), recorded_at=RECORDED, retention=RetentionPolicy())
    assert row.event_type == UNDECODABLE == "undecodable"
    assert row.raw == (value or b"")
    assert row.decode_error is not None
    assert row.decode_error.startswith(error + ": ")
    assert len(row.decode_error) <= 1024
    assert row.event_id == "t1.atb.audit:2:41"
    assert (row.request_id, row.producer) == (None, None)
    assert row.record_key == b"req-0001"
    assert row.occurred_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert row.retain_until == add_years(row.occurred_at, 7)


def test_undecodable_without_timestamp_uses_recorded_at() -> None:
    row = row_for(_meta(b"junk", timestamp_ms=0), recorded_at=RECORDED, retention=RetentionPolicy())
    assert row.occurred_at == RECORDED


def test_undecodable_uses_its_own_retention_override() -> None:
    policy = RetentionPolicy(days_by_event_type={UNDECODABLE: 30})
    row = row_for(_meta(b"junk"), recorded_at=RECORDED, retention=policy)
    assert row.retain_until == datetime.fromtimestamp(1_700_000_000, UTC) + timedelta(days=30)


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param(_meta(_event_bytes(time="9999-12-31T00:00:00Z")), id="valid envelope dated year 9999"),
        pytest.param(_meta(_event_bytes(time="9995-06-01T00:00:00Z")), id="valid envelope dated year 9995"),
        pytest.param(_meta(b"junk", timestamp_ms=2**62), id="undecodable with absurd Kafka timestamp"),
    ],
)
def test_row_for_never_raises_on_extreme_times(meta: RecordMeta) -> None:
    row = row_for(meta, recorded_at=RECORDED, retention=RetentionPolicy())
    assert row.raw == meta.value


@pytest.mark.parametrize("depth", [250, 5_000, 80_000])
def test_row_for_keeps_a_deeply_nested_record_as_undecodable_and_its_facets_and_name_are_empty(depth: int) -> None:
    """Nesting past the envelope parser's limit is refused as the model refuses it; deep enough to exhaust
    the native decoders' recursion, it raised RecursionError out of row_for (and stopped the sink)."""
    body = json.loads(_event_bytes())
    body["data"]["details"] = {"tier": "low"}
    raw = json.dumps(body).encode().replace(b'{"tier": "low"}', b"[" * depth + b"]" * depth)
    row = row_for(_meta(raw), recorded_at=RECORDED, retention=RetentionPolicy())
    assert row.event_type == UNDECODABLE
    assert row.decode_error is not None
    assert row.decode_error.startswith("invalid_envelope: ")
    assert row.raw == raw
    # Read from stored bytes elsewhere (console, verifier): they never raise either.
    facets, name = facets_of(AuditEvent.event_type, raw), audit_name(AuditEvent.event_type, raw)
    if depth > 1_000:
        assert (facets, name) == (Facets(), None)
