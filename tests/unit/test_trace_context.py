"""W3C trace context on the envelope and through the runtime (atb_runtime.tracing), with real spans.

The spans are recorded by the OpenTelemetry SDK into an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atb_identity import Svid, sign_envelope, verify_envelope
from atb_runtime.records import Incoming, dead_letter, outgoing, outgoing_envelope
from atb_runtime.tracing import configure_tracing, consuming, record_carrier, stamped, trace_id_of
from contracts import (
    AuditEvent,
    EventDecodeError,
    decode_envelope,
    decode_header,
    encode_envelope,
    signing_bytes,
)
from tests.unit.test_identity_proof import event
from tests.unit.test_identity_support import AGENT_ID, AT, World, make_svid, world

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

_EXPORTER = InMemorySpanExporter()


def recording() -> InMemorySpanExporter:
    """The in-memory exporter of every span ended from now on (on the process-wide SDK provider, set once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_atb_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._atb_test_exporter = True  # type: ignore[attr-defined]
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans ended during the test."""
    yield recording()
    _EXPORTER.clear()


@pytest.fixture(scope="module")
def w() -> World:
    return world()


@pytest.fixture(scope="module")
def svid(w: World) -> Svid:
    return make_svid(w.intermediate, intermediates=[w.intermediate])


# -- the envelope --------------------------------------------------------------------------------


def test_an_envelope_without_trace_context_keeps_its_bytes() -> None:
    plain = event()
    assert b"traceparent" not in encode_envelope(plain)
    assert b"tracestate" not in encode_envelope(plain)


def test_trace_context_travels_in_the_record_and_is_outside_the_signing_bytes() -> None:
    plain = event()
    traced = plain.model_copy(update={"traceparent": PARENT, "tracestate": "vendor=abc"})
    raw = encode_envelope(traced)
    assert f'"traceparent":"{PARENT}"'.encode() in raw
    assert decode_envelope(raw).traceparent == PARENT
    assert decode_header(raw).id == plain.id
    assert signing_bytes(traced) == signing_bytes(plain)


def test_a_proof_made_before_the_context_was_added_still_verifies(w: World, svid: Svid) -> None:
    signed = sign_envelope(event(), svid)
    carried = decode_envelope(encode_envelope(signed.model_copy(update={"traceparent": PARENT})))
    assert str(verify_envelope(carried, w.bundle, at=AT)) == AGENT_ID


@pytest.mark.parametrize(
    "value",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        "x" * 55,
    ],
)
def test_a_malformed_traceparent_is_refused_by_both_decoders(value: str) -> None:
    raw = encode_envelope(event()).replace(b'"type":', f'"traceparent":"{value}","type":'.encode())
    with pytest.raises(EventDecodeError) as caught:
        decode_envelope(raw.replace(b"\\n", b"\n") if value.endswith("\n") else raw)
    assert caught.value.code == "invalid_envelope"
    with pytest.raises(EventDecodeError):
        decode_header(raw)


def test_the_context_is_found_in_the_record_bytes() -> None:
    traced = event().model_copy(update={"traceparent": PARENT, "tracestate": "a=1,b=2"})
    assert record_carrier(encode_envelope(traced)) == {"traceparent": PARENT, "tracestate": "a=1,b=2"}
    assert record_carrier(encode_envelope(event())) is None
    assert record_carrier(None) is None
    assert trace_id_of(PARENT) == TRACE_ID
    assert trace_id_of("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None  # the all-zero id is invalid


# -- the runtime ---------------------------------------------------------------------------------


def _record(key: str, value: bytes | None, topic: str = "t.atb.poa.requests") -> Incoming:
    return Incoming(topic=topic, partition=1, offset=7, key=key.encode(), value=value)


def _audit(request_id: str) -> AuditEvent:
    return AuditEvent(audit_type="probe", request_id=request_id, actor=AGENT_ID, outcome="success", occurred_at=AT)


def test_what_a_handler_produces_for_a_traced_record_is_its_child(spans: InMemorySpanExporter) -> None:
    traced = event(request_id="req-1").model_copy(update={"traceparent": PARENT, "tracestate": "v=1"})
    other = event(request_id="req-2")
    with consuming("approvals", [_record("req-1", encode_envelope(traced)), _record("req-2", encode_envelope(other))]):
        answer = decode_envelope(outgoing(_audit("req-1"), source=AGENT_ID, namespace="t.").value)
        untouched = decode_envelope(outgoing(_audit("req-2"), source=AGENT_ID, namespace="t.").value)
        letter = decode_envelope(
            dead_letter(
                _record("req-1", b"junk"),
                consumer="c",
                error_code="x",
                reason="y",
                source=AGENT_ID,
                namespace="t.",
                request_id="req-1",
            )[0].value
        )
    (span,) = spans.get_finished_spans()
    assert span.name == "approvals process t.atb.poa.requests"
    assert span.kind is trace.SpanKind.CONSUMER
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.attributes is not None
    assert span.attributes["messaging.kafka.message.key"] == "req-1"
    child = f"00-{TRACE_ID}-{span.context.span_id:016x}-{int(span.context.trace_flags):02x}"
    assert answer.traceparent == child
    assert answer.tracestate == "v=1"
    assert letter.traceparent == child
    assert untouched.traceparent is None  # its request was not traced


def test_a_producer_in_a_span_stamps_the_span_and_keeps_a_context_already_set(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent:
        fresh = stamped(event())
        kept = stamped(event().model_copy(update={"traceparent": PARENT}))
        record = outgoing_envelope(event(), "t.atb.poa.requests")
    context = agent.get_span_context()
    assert fresh.traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    assert kept.traceparent == PARENT
    assert decode_envelope(record.value).traceparent == fresh.traceparent
    assert stamped(event()).traceparent is None  # outside any span: nothing to carry


def test_a_failing_handler_marks_its_spans(spans: InMemorySpanExporter) -> None:
    traced = event(request_id="req-9").model_copy(update={"traceparent": PARENT})
    with pytest.raises(RuntimeError), consuming("issuer", [_record("req-9", encode_envelope(traced))]):
        raise RuntimeError("boom")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is trace.StatusCode.ERROR
    assert re.fullmatch(r"[0-9a-f]{32}", f"{span.context.trace_id:032x}")
    assert f"{span.context.trace_id:032x}" == TRACE_ID


# -- export --------------------------------------------------------------------------------------


def test_nothing_is_recorded_unless_an_exporter_is_asked_for() -> None:
    assert configure_tracing("gateway", "0", {}) is None


async def test_spans_are_exported_by_otlp_when_the_endpoint_is_set() -> None:
    """A real OTLP/HTTP receiver (protobuf `ExportTraceServiceRequest` on /v1/traces) gets the service's spans."""
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        provider = configure_tracing("issuer", "issuer-2", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
        assert provider is not None
        with provider.get_tracer("test").start_as_current_span("issuer process t.atb.approvals.outcomes"):
            pass
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        await asyncio.to_thread(provider.shutdown)
    finally:
        await runner.cleanup()
    (message,) = received
    (resource_spans,) = message.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "issuer"
    assert resource["service.instance.id"] == "issuer-2"
    names = [span.name for scope in resource_spans.scope_spans for span in scope.spans]
    assert names == ["issuer process t.atb.approvals.outcomes"]
