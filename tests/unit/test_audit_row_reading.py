"""row_for reads an event's audit name and search facets from the data it decodes with the attributes.

The verifier recomputes the audit name from the stored bytes (`tokens.audit_name`),
and the console and the migration read facets from them (`facets.facets_of`). The row
must carry what those give, for every event type, for the redacted ones (whose stored
bytes are re-encoded without their token), and for bytes that spell the same key twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from audit_sink.domain import RetentionPolicy, row_for
from audit_sink.domain.facets import facets_of
from audit_sink.domain.rows import STORED_FIELDS, AuditRow, RecordMeta
from audit_sink.domain.tokens import audit_name
from contracts import ActionRequested, AuditEvent, EventPayload, PoaIssued, encode_envelope, make_envelope
from tests.unit.test_audit_facets import AGENT, _cases, _request

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
SOURCE = "spiffe://atb.local/svc/test"


def _row(raw: bytes) -> AuditRow:
    return row_for(RecordMeta("t", 0, 7, b"k", raw, 0), recorded_at=NOW, retention=RetentionPolicy())


def _raw(payload: EventPayload) -> bytes:
    return encode_envelope(make_envelope(payload, source=SOURCE, time=NOW))


def _payloads() -> list[EventPayload]:
    action = ActionRequested(
        request_id="req-1",
        action_id="a-2",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.read",
        resource="crm:contact/1",
        poa="eyJhbGciOiJFZERTQSJ9.e30.c2ln",
        requested_at=NOW,
    )
    audit = AuditEvent(
        audit_type="poa_issued",
        request_id="req-1",
        actor=SOURCE,
        outcome="success",
        details={"agent_id": AGENT, "action": "crm.contact.read", "tier": "low"},
        occurred_at=NOW,
    )
    return [payload for payload, _ in _cases()] + [action, audit, _request()]


@pytest.mark.parametrize("payload", _payloads(), ids=lambda p: type(p).__name__)
def test_the_row_carries_what_its_stored_bytes_give(payload: EventPayload) -> None:
    row = _row(_raw(payload))
    assert row.decode_error is None
    assert row.facets == facets_of(row.event_type, row.raw)
    assert row.audit_type == audit_name(row.event_type, row.raw)


def test_redacted_rows_carry_the_facets_of_their_stored_bytes() -> None:
    redacted = [row for row in map(_row, map(_raw, _payloads())) if row.redacted]
    assert {row.event_type for row in redacted} == {PoaIssued.event_type, ActionRequested.event_type}
    for row in redacted:
        assert row.facets == facets_of(row.event_type, row.raw)
        assert row.facets is not None
        assert row.facets.agent_id == AGENT


def test_a_key_spelled_twice_is_read_as_the_stored_bytes_read_it() -> None:
    raw = _raw(_payloads()[-2])  # the AuditEvent
    twice = raw.replace(b'"audit_type":"poa_issued"', b'"audit_type":"first_name","audit_type":"poa_issued"')
    twice = twice.replace(b'"outcome":"success"', b'"outcome":"failure","outcome":"success"')
    assert twice.count(b'"audit_type"') == 2
    assert twice.count(b'"outcome"') == 2
    row = _row(twice)
    assert row.decode_error is None
    assert (row.audit_type, row.facets) == (audit_name(row.event_type, twice), facets_of(row.event_type, twice))
    assert row.audit_type == "poa_issued"
    assert row.facets is not None
    assert row.facets.outcome == "success"


def test_facets_are_not_a_column() -> None:
    assert AuditRow._fields[:-1] == STORED_FIELDS
    assert AuditRow._fields[-1] == "facets"
