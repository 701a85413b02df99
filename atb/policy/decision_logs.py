"""OPA's decision logs into the audit trail: the receiver OPA's decision-log plugin uploads to.

`atb policy decision-log-receiver` runs it (docs/policy.md, "Decision logs").
OPA (v1.22.4, `v1/plugins/logs`) POSTs to `<service url>/logs` a gzip-compressed
JSON array of decision events (`Content-Encoding: gzip`), one chunk of at most
`upload_size_limit_bytes`. For each decision the receiver publishes one AuditEvent
`policy_decision_logged` on `atb.audit`, signed by the receiver's SVID, and
answers 204 only after Kafka acknowledged every event of the chunk. Any other
answer makes OPA keep the chunk in its buffer and upload it again later, so a
receiver or a Kafka that is down loses nothing until OPA's buffer is full.

What an event records (`details`), and what it never records:

    decision_id, path              OPA's decision id and the queried document (atb/poa/requirements, ...)
    revision, bundles              the bundle revision that decided (bundles.atb.revision)
    input_sha256                   SHA-256 of the input as canonical JSON (contracts/canonical.py;
                                   floats, which ATB never sends, as orjson writes them)
    actions                        the action names the input asks about (catalogue names only)
    result                         a summary: tier, allow, approvals, reason codes, policy_version
    result_sha256                  SHA-256 of the whole result
    opa_id, opa_version            OPA's labels (which instance decided)
    requested_by, timestamp        the caller's address and OPA's time of the decision
    error                          OPA's error code when the evaluation failed

The raw input is never written: it carries the request's parameters (agent-supplied,
free-form: account numbers, customer data, anything an agent put there) and the
PoA's claims and principals. The digest proves which input was decided (re-hash
the recorded IssuanceRequested's input) without copying it. Result details
(human-readable deny messages) are left out too; their codes are kept.

An event is re-uploaded when OPA did not get the answer to an upload Kafka had
already taken: the envelope id is derived from the decision id
(`uuid5(decision_id)`), so a duplicate is recognisable.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import logging
import re
import time
import uuid
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import JsonValue

from atb_identity import Svid, sign_envelope
from atb_runtime.publisher import RecordPublisher
from atb_runtime.records import Outgoing, outgoing_envelope
from contracts import AuditEvent, CanonicalJsonError, JsonObject, make_envelope, sha256_digest, topic_name

__all__ = [
    "DECISION_AUDIT_TYPE",
    "MAX_BODY_BYTES",
    "MAX_DECODED_BYTES",
    "RECEIVER_ID",
    "DecisionLogFormatError",
    "DecisionLogMetrics",
    "decision_event",
    "decode_upload",
    "gzip_events",
    "receiver_app",
    "serve_receiver",
]

log = logging.getLogger(__name__)

DECISION_AUDIT_TYPE = "policy_decision_logged"
RECEIVER_ID = "spiffe://atb.local/svc/policy-decision-logs"
"""The SPIFFE ID whose SVID signs every `policy_decision_logged` event."""

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest upload accepted, once inflated (OPA's chunks are at most `upload_size_limit_bytes` of gzip,
32 KiB here; a larger body is answered 413)."""
MAX_DECODED_BYTES = 64 * 1024 * 1024
"""Largest decompressed upload: a gzip bomb is refused, not inflated."""
PUBLISH_TIMEOUT_S = 5.0
"""How long an upload waits for Kafka; then 503 and OPA keeps the chunk (OPA's own timeout is 10 s)."""

_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
_MAX_ITEMS = 100


class DecisionLogFormatError(ValueError):
    """An upload that is not OPA's gzip JSON array of decision events."""


def decode_upload(body: bytes) -> list[JsonObject]:
    """The decision events of one upload: a JSON array, gzip-compressed or not; a bounded inflate.

    The receiver's HTTP server has already inflated a body sent with `Content-Encoding: gzip`
    (within `MAX_BODY_BYTES`); a body that still starts with gzip's magic bytes is inflated here.
    """
    data = body
    if body[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, MAX_DECODED_BYTES + 1)
        except zlib.error as exc:
            raise DecisionLogFormatError(f"not gzip: {exc}") from exc
        if len(data) > MAX_DECODED_BYTES or inflater.unconsumed_tail:
            raise DecisionLogFormatError(f"more than {MAX_DECODED_BYTES} bytes once decompressed")
        if not inflater.eof:
            raise DecisionLogFormatError("truncated gzip stream")
    try:
        events = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecisionLogFormatError(f"not JSON: {exc}") from exc
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise DecisionLogFormatError("not a JSON array of decision events")
    for event in events:
        decision_id = event.get("decision_id")
        if not isinstance(decision_id, str) or not decision_id or len(decision_id) > 128:
            raise DecisionLogFormatError("a decision event without a decision_id")
    return events


def _text(value: object, limit: int = 128) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _digest(value: object) -> str:
    try:
        return sha256_digest(value)
    except CanonicalJsonError:  # floats: orjson's spelling, keys sorted
        return "sha256:" + hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _actions(payload: object) -> list[str]:
    """The action names the input asks about: `input.action`, or each `input.batch[].request.action`."""
    if not isinstance(payload, dict):
        return []
    found: list[object] = [payload.get("action")]
    batch = payload.get("batch")
    if isinstance(batch, list):
        for item in batch:
            request = item.get("request") if isinstance(item, dict) else None
            found.append(request.get("action") if isinstance(request, dict) else None)
    names = [a for a in found if isinstance(a, str) and _NAME.match(a)]
    return list(dict.fromkeys(names))[:_MAX_ITEMS]


def _one_result(value: object) -> JsonObject:
    if not isinstance(value, dict):
        return {"type": type(value).__name__}
    out: JsonObject = {}
    for key in ("tier", "policy_version", "listed_tier"):
        text = _text(value.get(key))
        if text is not None:
            out[key] = text
    for key in ("allow", "ticket_required", "cross_tenant"):
        if isinstance(value.get(key), bool):
            out[key] = value[key]
    approvals = value.get("approvals")
    if isinstance(approvals, int) and not isinstance(approvals, bool):
        out["approvals"] = approvals
    reasons = value.get("reasons")
    if isinstance(reasons, list):
        codes = [_text(r.get("code"), 64) for r in reasons if isinstance(r, dict)]
        out["reason_codes"] = list[JsonValue](c for c in codes if c is not None)[:_MAX_ITEMS]
    return out


def _result(value: object) -> JsonObject:
    if isinstance(value, list):
        return {"count": len(value), "items": list[JsonValue](_one_result(v) for v in value[:_MAX_ITEMS])}
    if isinstance(value, bool):
        return {"value": value}
    return _one_result(value)


def decision_event(event: JsonObject, *, actor: str = RECEIVER_ID, bundle: str = "atb") -> AuditEvent:
    """The AuditEvent of one decision (see the module docstring for what is kept and what is not)."""
    bundles_raw = event.get("bundles")
    bundles: JsonObject = {}
    if isinstance(bundles_raw, dict):
        for name, info in list(bundles_raw.items())[:16]:
            rev = _text(info.get("revision")) if isinstance(info, dict) else None
            if rev is not None:
                bundles[str(name)[:64]] = rev
    named = bundles.get(bundle)
    revision = named if isinstance(named, str) else _text(event.get("revision"))
    labels = event.get("labels") if isinstance(event.get("labels"), dict) else {}
    assert isinstance(labels, dict)
    path = _text(event.get("path"), 256) or _text(event.get("query"), 256) or ""
    details: JsonObject = {
        "decision_id": str(event["decision_id"]),
        "path": path,
        "revision": revision,
        "bundles": bundles,
        "input_sha256": _digest(event["input"]) if "input" in event else None,
        "actions": list[JsonValue](_actions(event.get("input"))),
        "result": _result(event.get("result")),
        "result_sha256": _digest(event["result"]) if "result" in event else None,
        "opa_id": _text(labels.get("id")),
        "opa_version": _text(labels.get("version")),
        "requested_by": _text(event.get("requested_by")),
        "timestamp": _text(event.get("timestamp"), 64),
    }
    error = event.get("error")
    if isinstance(error, dict):
        details["error"] = _text(error.get("code"), 64) or "error"
    erased = event.get("erased")
    if isinstance(erased, list):
        details["erased"] = [e for e in (_text(x, 256) for x in erased[:_MAX_ITEMS]) if e is not None]
    failed = "error" in details
    return AuditEvent(
        audit_type=DECISION_AUDIT_TYPE,
        actor=actor,
        outcome="failure" if failed else "info",
        reason=f"{path} decided with revision {revision or '(none)'}"[:1024],
        details=details,
        occurred_at=datetime.now(UTC),
    )


def _records(events: Sequence[JsonObject], svid: Svid, namespace: str) -> list[Outgoing]:
    source = str(svid.spiffe_id)
    out = []
    for event in events:
        payload = decision_event(event, actor=source)
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"opa-decision:{event['decision_id']}"))
        envelope = sign_envelope(make_envelope(payload, source=source, event_id=event_id), svid)
        out.append(outgoing_envelope(envelope, topic_name(AuditEvent.topic, namespace)))
    return out


class DecisionLogMetrics:
    """The receiver's metrics (deploy/prometheus/alerts.yml alerts on them), in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.uploads = Counter(
            "atb_policy_decision_log_uploads",
            "Uploads from OPA by outcome: accepted, refused (malformed), unauthorized, unavailable (Kafka).",
            ["outcome"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "atb_policy_decision_log_decisions",
            "Decisions written to atb.audit (policy_decision_logged).",
            registry=self.registry,
        )
        self.last_accepted = Gauge(
            "atb_policy_decision_log_last_accepted_timestamp_seconds",
            "Unix time of the last upload whose decisions Kafka acknowledged.",
            registry=self.registry,
        )
        for outcome in ("accepted", "refused", "unauthorized", "unavailable"):
            self.uploads.labels(outcome)


def receiver_app(
    publisher: RecordPublisher,
    svid: Svid,
    *,
    namespace: str = "",
    token: str | None = None,
    metrics: DecisionLogMetrics | None = None,
    publish_timeout_s: float = PUBLISH_TIMEOUT_S,
) -> web.Application:
    """POST /logs[/<partition>] (OPA's uploads), GET /healthz, GET /metrics."""
    stats = metrics or DecisionLogMetrics()
    expected = f"Bearer {token}".encode() if token else None

    async def upload(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                stats.uploads.labels("unauthorized").inc()
                return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.read()
        try:
            events = decode_upload(body)
        except DecisionLogFormatError as exc:
            # OPA never sends this; OPA would retry any non-2xx, so the refusal is for other clients.
            stats.uploads.labels("refused").inc()
            log.warning("decision log receiver: refused an upload of %d bytes: %s", len(body), exc)
            return web.json_response({"error": "bad_upload", "detail": str(exc)[:300]}, status=400)
        records = _records(events, svid, namespace)
        try:
            await asyncio.wait_for(publisher.send_and_wait(records), publish_timeout_s)
        except Exception as exc:
            stats.uploads.labels("unavailable").inc()
            log.error("decision log receiver: Kafka did not take %d decisions: %r", len(records), exc)
            return web.json_response({"error": "unavailable"}, status=503)
        stats.uploads.labels("accepted").inc()
        stats.decisions.inc(len(records))
        stats.last_accepted.set(time.time())
        return web.Response(status=204)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": "policy-decision-logs"})

    async def metrics_route(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(stats.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/logs", upload)
    app.router.add_post("/logs/{partition}", upload)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_route)
    return app


async def serve_receiver(
    bootstrap: str, svid: Svid, *, host: str, port: int, namespace: str = "", token: str | None = None
) -> None:
    """Run the receiver until cancelled (Ctrl-C): a Kafka publisher and the HTTP app."""
    from atb_runtime.publisher import Publisher

    async with Publisher(bootstrap, "atb-policy-decision-logs", linger_ms=5) as publisher:
        runner = web.AppRunner(receiver_app(publisher, svid, namespace=namespace, token=token))
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def gzip_events(events: Sequence[JsonObject]) -> bytes:
    """An upload as OPA sends it (for tests and probes)."""
    return gzip.compress(orjson.dumps(list(events)))
