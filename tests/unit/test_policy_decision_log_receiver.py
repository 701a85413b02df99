"""The decision-log receiver without OPA or Kafka: what it accepts, refuses and records (atb/policy/decision_logs.py).

The receiver with the real OPA and Kafka: tests/integration/test_policy_decision_logs.py.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from atb.policy.decision_logs import (
    MAX_DECODED_BYTES,
    RECEIVER_ID,
    DecisionLogFormatError,
    decision_event,
    decode_upload,
    gzip_events,
    receiver_app,
)
from atb.policy.opa_config import DecisionLogUpload, opa_config
from atb_identity import ensure_svid
from atb_runtime.records import Outgoing
from contracts import AuditEvent, JsonObject, decode_envelope, sha256_digest

EVENT: JsonObject = {
    "decision_id": "4a7e0c1b-0000-4000-8000-000000000001",
    "path": "atb/poa/decisions",
    "bundles": {"atb": {"revision": "abc123"}},
    "labels": {"id": "opa-1", "version": "1.22.4"},
    "input": {
        "batch": [
            {"request": {"action": "sap.payment.execute", "params": {"iban": "DE00SECRET"}}, "claims": {"jti": "x"}},
            {"request": {"action": "<script>"}},
        ]
    },
    "result": [
        {"allow": False, "tier": "critical", "reasons": [{"code": "tier_too_low", "detail": "PoA for high"}]},
        {"allow": True, "tier": "low", "reasons": [], "policy_version": "abc123"},
    ],
    "requested_by": "127.0.0.1:5000",
    "timestamp": "2026-12-05T02:00:00Z",
}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def publish(self, records: Sequence[Outgoing]) -> None:
        self.sent.extend(records)

    async def flush(self) -> None:
        return None

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        self.sent.extend(records)


def test_an_event_keeps_the_revision_a_digest_and_a_summary_never_the_input() -> None:
    event = decision_event(EVENT)
    assert event.audit_type == "policy_decision_logged"
    details = event.details
    assert details["revision"] == "abc123"
    assert details["input_sha256"] == sha256_digest(EVENT["input"])
    assert details["actions"] == ["sap.payment.execute"]  # "<script>" is no action name
    assert details["result"] == {
        "count": 2,
        "items": [
            {"allow": False, "tier": "critical", "reason_codes": ["tier_too_low"]},
            {"allow": True, "tier": "low", "reason_codes": [], "policy_version": "abc123"},
        ],
    }
    text = orjson.dumps(event.model_dump(mode="json"))
    assert b"DE00SECRET" not in text
    assert b"PoA for high" not in text  # deny messages are not kept, their codes are


def test_decode_accepts_gzip_and_plain_json() -> None:
    assert decode_upload(gzip_events([EVENT])) == [EVENT]
    assert decode_upload(orjson.dumps([EVENT])) == [EVENT]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", "not a JSON array"),
        (b"[1]", "not a JSON array"),
        (b"[{}]", "without a decision_id"),
        (b"not json", "not JSON"),
        (gzip.compress(b"[")[:-4], "truncated gzip"),
        (b"\x1f\x8b garbage", "not gzip"),
        (gzip.compress(b"[" + b" " * (MAX_DECODED_BYTES + 10) + b"]"), "once decompressed"),
    ],
)
def test_decode_refuses_what_opa_never_sends(body: bytes, message: str) -> None:
    with pytest.raises(DecisionLogFormatError, match=message):
        decode_upload(body)


async def test_the_app_signs_and_publishes_and_refuses(tmp_path: Path) -> None:
    svid = ensure_svid(tmp_path, RECEIVER_ID)
    recorder = Recorder()
    app = receiver_app(recorder, svid, namespace="tx.", token="t0ken")
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/logs", data=gzip_events([EVENT]))).status == 401
        headers = {"Authorization": "Bearer t0ken"}
        assert (await client.post("/logs", data=b"[{}]", headers=headers)).status == 400
        response = await client.post(
            "/logs", data=gzip_events([EVENT]), headers={**headers, "Content-Encoding": "gzip"}
        )
        assert response.status == 204
        metrics = await (await client.get("/metrics")).text()
    assert len(recorder.sent) == 1
    assert recorder.sent[0].topic == "tx.atb.audit"
    envelope = decode_envelope(recorder.sent[0].value)
    assert envelope.source == RECEIVER_ID
    assert envelope.proof is not None
    assert AuditEvent.model_validate(envelope.data).details["decision_id"] == EVENT["decision_id"]
    assert 'atb_policy_decision_log_uploads_total{outcome="accepted"} 1.0' in metrics
    assert 'atb_policy_decision_log_uploads_total{outcome="refused"} 1.0' in metrics
    assert 'atb_policy_decision_log_uploads_total{outcome="unauthorized"} 1.0' in metrics
    assert "atb_policy_decision_log_decisions_total 1.0" in metrics


def test_opa_config_uploads_decisions_with_a_bounded_buffer() -> None:
    document = opa_config(
        service_url="http://store",
        public_pem="PEM",
        algorithm="ES256",
        decision_logs=DecisionLogUpload(url="http://receiver:8383/", token_path="/run/token"),
    )
    assert document["services"]["atb-decision-logs"] == {  # type: ignore[index,call-overload]
        "url": "http://receiver:8383",
        "credentials": {"bearer": {"token_path": "/run/token"}},
    }
    assert document["decision_logs"] == {
        "service": "atb-decision-logs",
        "reporting": {
            "buffer_type": "size",
            "buffer_size_limit_bytes": 64 * 1024 * 1024,
            "upload_size_limit_bytes": 32 * 1024,
            "min_delay_seconds": 1,
            "max_delay_seconds": 10,
        },
    }
    assert "decision_logs" not in opa_config(service_url="http://s", public_pem="PEM", algorithm="ES256")
    with pytest.raises(ValueError, match="32 KiB"):
        opa_config(
            service_url="http://s", public_pem="P", algorithm="ES256", decision_logs=DecisionLogUpload("u", 1024)
        )
