"""No bearer token in a stored row, and the audit name beside it (issue 21): ingest, and the `atb audit tail` line."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from atb.cli.audit_tail import _line
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.retention import RetentionPolicy
from audit_sink.domain.rows import RecordMeta, row_for
from audit_sink.domain.tokens import audit_name, redact
from contracts import ActionRequested, AuditEvent, EventPayload, encode_envelope, make_envelope

NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
SOURCE = "spiffe://atb.local/agent/crm-bot"
TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJl"


def _bytes(payload: EventPayload) -> bytes:
    return encode_envelope(make_envelope(payload, source=SOURCE, event_id="evt-1", time=NOW))


def _action(poa: str | None = TOKEN) -> bytes:
    return _bytes(
        ActionRequested(
            request_id="req-0001",
            action_id="act-1",
            agent_id=SOURCE,
            tenant="acme",
            action="crm.contact.update",
            resource="crm:contact/42",
            params={"email": "new@example.com"},
            poa=poa,
            requested_at=NOW,
        )
    )


def _row(value: bytes, topic: str = "atb.broker.actions"):  # type: ignore[no-untyped-def]
    return row_for(RecordMeta(topic, 0, 7, b"k", value, 0), recorded_at=NOW, retention=RetentionPolicy())


def test_a_presented_poa_is_stored_as_its_digest() -> None:
    value = _action()
    row = _row(value)
    assert TOKEN.encode() not in row.raw
    assert json.loads(row.raw)["data"]["poa"] == "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()
    assert row.redacted
    assert row.received_sha256 == "sha256:" + hashlib.sha256(value).hexdigest()
    assert json.loads(leaf_bytes(row))["raw_sha256"] == hashlib.sha256(row.raw).hexdigest()
    assert row.audit_type is None


def test_an_action_without_a_poa_is_stored_as_received() -> None:
    value = _action(None)
    assert redact(ActionRequested.event_type, value) is None
    row = _row(value)
    assert (row.raw, row.redacted, row.received_sha256) == (value, False, None)


def test_the_audit_name_is_read_from_an_audit_events_bytes_only() -> None:
    value = _bytes(
        AuditEvent(audit_type="poa_issued", request_id="req-1", actor=SOURCE, outcome="success", occurred_at=NOW)
    )
    assert _row(value, "atb.audit").audit_type == "poa_issued"
    assert audit_name(ActionRequested.event_type, value) is None  # only an AuditEvent has one
    assert audit_name(AuditEvent.event_type, b"\x00not json") is None
    assert audit_name(AuditEvent.event_type, value.replace(b'"poa_issued"', b'"POA ISSUED"')) is None


def test_a_tailed_line_carries_the_audit_name_as_event_type() -> None:
    value = _bytes(
        AuditEvent(audit_type="poa_issued", request_id="req-1", actor=SOURCE, outcome="success", occurred_at=NOW)
    )
    line = _line(value, {})
    assert line is not None
    shown = json.loads(line)
    assert (shown["event_type"], shown["audit_type"], shown["ce_type"]) == (
        "poa_issued",
        "poa_issued",
        AuditEvent.event_type,
    )
    assert _line(value, {"audit_type": "poa_issued"}) is not None
    assert _line(value, {"audit_type": "other"}) is None
