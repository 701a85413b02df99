"""W3C trace context across every Kafka hop and HTTP edge, and OpenTelemetry spans.

What travels. Every record is a CloudEvents envelope; its `traceparent` (and
`tracestate`) extension attributes carry the W3C trace context of the span
that produced it (`contracts/envelope.py`; outside the signing bytes). At an
HTTP edge the same context travels in the `traceparent` / `tracestate` headers.

Who carries it (all here, in the runtime; services do nothing):

- the HTTP edges (`http_tracing`, a middleware every service site runs through
  `web.app_runner`): a request continues the trace of its `traceparent` header,
  or starts one; its server span is current while the handler runs, and the
  answer says `traceparent` so a client can follow it;
- `stamped`, called by `records.outgoing_envelope` and `records.dead_letter`
  (so by every producer: services, the SDK, the CLI): an envelope without a
  trace context gets the one of its request in the batch being handled (by
  Kafka key: every record of a request is keyed by its request id,
  docs/architecture.md §4.4), else the current span's;
- `consuming`, around the handler of the transactional processor and the sink
  of a follower: one consumer span per record that carries a trace context,
  child of that context; while the handler runs, the records it produces for
  that request are stamped with the span's context.

Spans are exported only when asked (`configure_tracing`):

- `OTEL_EXPORTER_OTLP_ENDPOINT` (and the other standard `OTEL_EXPORTER_OTLP_*`
  variables): OTLP over HTTP/protobuf, batched;
- `ATB_TRACE_FILE` (tests): every ended span as one JSON line appended to that
  file, written when the span ends.

Without either, no span is recorded, and the context a record or a request
came with is still carried on unchanged, so a hop without an exporter does not
break a trace.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from atb_runtime.logs import TRACE_ID_KEY
from contracts import Envelope

__all__ = [
    "OTLP_ENDPOINT_ENV",
    "TRACE_FILE_ENV",
    "FileSpanExporter",
    "TraceCarrier",
    "carrier_of",
    "configure_tracing",
    "consuming",
    "current_carrier",
    "envelope_carrier",
    "http_tracing",
    "producing_for",
    "record_carrier",
    "stamped",
    "trace_id_of",
]

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACE_FILE_ENV = "ATB_TRACE_FILE"
"""Test switch: append every ended span to this file as a JSON line."""

TraceCarrier = dict[str, str]
"""`{"traceparent": ..., "tracestate": ...}` (tracestate only when there is one)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "atb_runtime"
_BY_KEY: ContextVar[Mapping[bytes, TraceCarrier] | None] = ContextVar("atb_trace_by_key", default=None)
_TRACEPARENT_AT = b'"traceparent":"'
_TRACESTATE_AT = b'"tracestate":"'


class FileSpanExporter(SpanExporter):
    """Every span as one JSON line appended to a file (the test switch `ATB_TRACE_FILE`)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # One write per line on an O_APPEND descriptor: several processes may share the file.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            for span in spans:
                os.write(fd, (json.dumps(_span_json(span), default=str) + "\n").encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _span_json(span: ReadableSpan) -> dict[str, object]:
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def configure_tracing(service: str, instance: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install a recording tracer provider when an exporter is asked for (None when not).

    The provider is the process's (`trace.set_tracer_provider`); its `shutdown()` flushes what is left on exit.
    """
    env = environ if environ is not None else os.environ
    endpoint = env.get(OTLP_ENDPOINT_ENV, "").strip()
    trace_file = env.get(TRACE_FILE_ENV, "").strip()
    if not endpoint and not trace_file:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": instance, "service.namespace": "atb"})
    )
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The signal's own endpoint as given, else the base endpoint's /v1/traces (the OTLP exporter spec).
        traces_at = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or f"{endpoint.rstrip('/')}/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_at)))
    if trace_file:
        provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(Path(trace_file))))
    trace.set_tracer_provider(provider)
    return provider


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


def carrier_of(span: Span) -> TraceCarrier | None:
    """The W3C headers of `span`'s context, or None when it has no valid context."""
    if not span.get_span_context().is_valid:
        return None
    carrier: TraceCarrier = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier if "traceparent" in carrier else None


def current_carrier() -> TraceCarrier | None:
    """The W3C headers of the current span (what an HTTP client sends on), or None outside a span."""
    return carrier_of(trace.get_current_span())


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent`, or None when it is absent or invalid."""
    if not traceparent:
        return None
    context = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def envelope_carrier(envelope: Envelope) -> TraceCarrier | None:
    if envelope.traceparent is None:
        return None
    carrier = {"traceparent": envelope.traceparent}
    if envelope.tracestate:
        carrier["tracestate"] = envelope.tracestate
    return carrier


def record_carrier(value: bytes | None) -> TraceCarrier | None:
    """The trace context of a record's envelope, found without parsing the whole record.

    The value is canonical JSON (keys sorted, no whitespace): the envelope's own
    `traceparent` comes after `data` and `proof`, and only `tracestate` and
    `type` (strings without quotes) after it, so its last occurrence is the
    attribute. Whatever is found is checked by the W3C parser; a record that
    is not canonical may at worst name a trace of its producer's choice, which
    its producer could have done anyway: trace context is never trusted for a decision.
    """
    if not value:
        return None
    at = value.rfind(_TRACEPARENT_AT)
    if at < 0:
        return None
    start = at + len(_TRACEPARENT_AT)
    end = value.find(b'"', start)
    if end < 0 or end - start > 64:
        return None
    carrier = {"traceparent": value[start:end].decode("ascii", "replace")}
    state_at = value.find(_TRACESTATE_AT, end)
    if state_at >= 0:
        state_start = state_at + len(_TRACESTATE_AT)
        state_end = value.find(b'"', state_start)
        if 0 <= state_end - state_start <= 512:
            carrier["tracestate"] = value[state_start:state_end].decode("ascii", "replace")
    return carrier


def stamped(envelope: Envelope) -> Envelope:
    """`envelope` with the trace context of its request in the batch being handled, else the current span's."""
    if envelope.traceparent is not None:
        return envelope
    by_key = _BY_KEY.get()
    # While a batch is handled, only its traced requests' records are stamped (by key): another request's
    # record answers an untraced record, even when the one traced record's span is the current one.
    carrier = by_key.get(envelope.partitionkey.encode()) if by_key is not None else carrier_of(trace.get_current_span())
    if carrier is None:
        return envelope
    return envelope.model_copy(update={"traceparent": carrier["traceparent"], "tracestate": carrier.get("tracestate")})


@contextlib.contextmanager
def producing_for(carriers: Mapping[bytes, TraceCarrier]) -> Iterator[None]:
    """Inside the block, an envelope keyed by one of these keys (request ids) carries that key's context.

    For records made for several requests at once away from their requests' own tasks (the broker's HTTP
    decisions, made in batches by the decision queue's task): each caller's context, taken where it asked.
    """
    if not carriers:
        yield
        return
    token = _BY_KEY.set(carriers)
    try:
        yield
    finally:
        _BY_KEY.reset(token)


class ConsumedRecord(Protocol):
    """What `consuming` reads of a record (aiokafka's `ConsumerRecord`, `records.Incoming`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@contextlib.contextmanager
def consuming(consumer: str, records: Sequence[ConsumedRecord]) -> Iterator[None]:
    """One consumer span per record that carries a trace context, for as long as the block runs.

    Inside the block, what is produced for a request (by key) carries its
    record's span as parent (`stamped`); with exactly one such record, its span
    is also the current one (logs then name its trace).
    """
    spans: list[Span] = []
    by_key: dict[bytes, TraceCarrier] = {}
    tracer = _tracer()
    for record in records:
        incoming = record_carrier(record.value)
        if incoming is None:
            continue
        parent = _PROPAGATOR.extract(incoming)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            continue
        span = tracer.start_span(
            f"{consumer} process {record.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": consumer,
                **({"messaging.kafka.message.key": record.key.decode("utf-8", "replace")} if record.key else {}),
            },
        )
        spans.append(span)
        carrier = carrier_of(span) or incoming
        if record.key is not None:
            by_key[record.key] = carrier
    if not spans:
        yield
        return
    token = _BY_KEY.set(by_key)
    attached = otel_context.attach(trace.set_span_in_context(spans[0])) if len(spans) == 1 else None
    try:
        yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}"))
        raise
    finally:
        if attached is not None:
            otel_context.detach(attached)
        _BY_KEY.reset(token)
        for span in spans:
            span.end()


@web.middleware
async def http_tracing(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A server span per request, continuing the trace of its `traceparent` header (or starting one)."""
    if "traceparent" not in request.headers and not isinstance(trace.get_tracer_provider(), TracerProvider):
        return await handler(request)  # nothing to continue and nothing records: no span at all (the hot path)
    parent = _PROPAGATOR.extract(request.headers)
    route = request.match_info.route.resource
    template = route.canonical if route is not None else request.path
    span = _tracer().start_span(
        f"{request.method} {template}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "url.path": request.path, "http.route": template},
    )
    context = span.get_span_context()
    if context.is_valid:
        request[TRACE_ID_KEY] = f"{context.trace_id:032x}"
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=True, set_status_on_exception=True):
            response = await handler(request)
    except web.HTTPException as exc:
        span.set_attribute("http.response.status_code", exc.status)
        _answer_with_trace(exc, span)
        span.end()
        raise
    except BaseException:
        span.end()
        raise
    span.set_attribute("http.response.status_code", response.status)
    if response.status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    if not response.prepared:
        _answer_with_trace(response, span)
    span.end()
    return response


def _answer_with_trace(response: web.StreamResponse, span: Span) -> None:
    carrier = carrier_of(span)
    if carrier is not None:
        response.headers["traceparent"] = carrier["traceparent"]
