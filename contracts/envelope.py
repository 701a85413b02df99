"""The CloudEvents 1.0 envelope every ATB record travels in, and its Kafka binding.

ATB uses the *structured* content mode of the CloudEvents Kafka protocol binding
everywhere (docs/architecture.md §4.2): the record value is the whole event as canonical JSON, the Kafka key is
the `partitionkey` extension (the request id), and one header says
`content-type: application/cloudevents+json`. Structured mode keeps every
attribute inside the bytes the audit store keeps and the proof signs.

`proof` is an extension attribute carrying the producer's signature over the
canonical bytes of the envelope *without* `proof` (see `signing_bytes`).

`traceparent` and `tracestate` are the extension attributes of the CloudEvents
distributed-tracing extension: the W3C trace context of the span that produced
the event, so a request can be followed across every Kafka hop. Both are
optional (events without them, older ones included, stay valid) and both are
left out of the signing bytes, like `proof`: they are telemetry, never an input
to a decision, so a hop may carry a record's context on without re-signing it,
and a proof never depends on whether tracing was on (docs/observability.md).

This module parses and builds envelopes; it does not verify proofs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from contracts.canonical import CanonicalJsonError, canonical_json
from contracts.errors import EventDecodeError
from contracts.events import EVENT_TYPES, EventPayload, JsonObject
from contracts.limits import MAX_EVENT_BYTES

__all__ = [
    "CONTENT_TYPE",
    "CONTENT_TYPE_HEADER",
    "MAX_EVENT_BYTES",
    "TRACEPARENT_PATTERN",
    "UNSIGNED_ATTRIBUTES",
    "Envelope",
    "EnvelopeHeader",
    "EventDecodeError",
    "Proof",
    "decode_envelope",
    "decode_header",
    "decode_header_and_data",
    "encode_envelope",
    "make_envelope",
    "payload_of",
    "signing_bytes",
]

CONTENT_TYPE = "application/cloudevents+json"
CONTENT_TYPE_HEADER = "content-type"

TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""A W3C `traceparent` (version-format-00 layout: version, trace id, parent span id, flags)."""
TRACESTATE_MAX = 512
"""The longest `tracestate` carried (W3C: vendors' entries may be cut above 512 characters)."""
UNSIGNED_ATTRIBUTES = ("proof", "traceparent", "tracestate")
"""Attributes outside the bytes a proof signs (`signing_bytes`)."""


class Proof(BaseModel):
    """Proof of origin: a signature by the producer's SVID key, with its chain.

    `alg` is the SVID key's: Ed25519, ES256 (EC P-256), ES384 (EC P-384) or RS256
    (RSA 2048-4096 bits, whose signature takes up to 683 base64url characters).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alg: Literal["Ed25519", "ES256", "ES384", "RS256"] = "Ed25519"
    sig: Annotated[str, Field(min_length=1, max_length=700)]
    x5c: tuple[str, ...] = Field(min_length=1, max_length=8)


class Envelope(BaseModel):
    """A CloudEvents 1.0 event in structured mode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Annotated[str, Field(min_length=1, max_length=2048)]
    type: Annotated[str, Field(pattern=r"^atb\.[a-z_]+\.[a-z_]+\.v[0-9]+$")]
    time: AwareDatetime
    subject: str | None = None
    partitionkey: Annotated[str, Field(min_length=1, max_length=256)]
    datacontenttype: Literal["application/json"] = "application/json"
    data: JsonObject
    proof: Proof | None = None
    traceparent: Annotated[str, Field(pattern=TRACEPARENT_PATTERN)] | None = None
    """W3C trace context of the producing span (CloudEvents distributed-tracing extension); not signed."""
    tracestate: Annotated[str, Field(max_length=TRACESTATE_MAX, pattern=r"^[ -~]*$")] | None = None
    """Vendor-specific trace state that goes with `traceparent`; not signed."""


def make_envelope(
    payload: EventPayload,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
) -> Envelope:
    """Wrap a payload; the subject is the request id, the partition key the payload's key."""
    data = payload.model_dump(mode="json")
    request_id = data.get("request_id")
    # Every attribute is validated; `data` is put in after, unvalidated: it is the JSON-mode dump
    # of a payload that was validated when it was made, so checking it again as a JSON tree
    # (the costliest part of building an envelope) could find nothing.
    header = Envelope(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=payload.event_type,
        time=time or datetime.now(UTC),
        subject=request_id if isinstance(request_id, str) else None,
        partitionkey=payload.partition_key(),
        data={},
    )
    # The header was made here and has not been seen by anyone: `data` goes in place (as
    # model_copy would put it in the copy, without the copy).
    header.__dict__["data"] = data
    return header


def _envelope_json(envelope: Envelope) -> tuple[JsonObject, bool]:
    """The envelope as a JSON object, and whether it is known to hold no float (see `_plain_body`)."""
    body = _plain_body(envelope)
    plain = body is not None
    if body is None:
        body = envelope.model_dump(mode="json")
    # Absent optional attributes are left out, so an envelope without them has the bytes it always had.
    for name in ("proof", "subject", "traceparent", "tracestate"):
        if body.get(name) is None:
            body.pop(name, None)
    return body, plain


def _canonical(body: JsonObject, plain: bool) -> bytes:
    """canonical_json(body); a plain body (no float anywhere, checked by `_plain_tree`) skips the float walk."""
    if not plain:
        return canonical_json(body)
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # an integer beyond 64 bits, as in canonical_json
        raise CanonicalJsonError(str(exc)) from exc


_FIELDS = frozenset(Envelope.model_fields)
_TIME = TypeAdapter(AwareDatetime)
_PLAIN_LEAVES = frozenset({str, int, bool, type(None)})


def _plain_body(envelope: Envelope) -> JsonObject | None:
    """`envelope.model_dump(mode="json")` without pydantic's serialiser, or None when in any doubt.

    The dump of an envelope is its attributes as they are, `time` in pydantic's JSON
    spelling, the proof as a dict and `data` unchanged, as long as every value in `data`
    is plain JSON already (exact dict, list, str, int, bool, None: what validation or a
    JSON-mode dump leaves there). Anything else (a float, a tuple, a subclass, a value put
    in without validation) is left to pydantic, so the bytes never differ; floats are then
    refused by `canonical_json` as before. The dump of `data` was most of an envelope's
    encoding cost, paid on every proof signed or checked and every record encoded.
    tests/unit/test_contracts_envelope_fast.py holds the two paths to the same output.
    """
    fields = envelope.__dict__
    if type(envelope) is not Envelope or fields.keys() != _FIELDS or envelope.__pydantic_extra__:
        return None
    data = fields["data"]
    if type(data) is not dict or not _plain_tree(data):
        return None
    proof = fields["proof"]
    if proof is None:
        proof_json: JsonObject | None = None
    elif type(proof) is Proof and type(proof.alg) is str and type(proof.sig) is str and type(proof.x5c) is tuple:
        x5c = list(proof.x5c)
        if any(type(entry) is not str for entry in x5c):
            return None
        proof_json = {"alg": proof.alg, "sig": proof.sig, "x5c": x5c}
    else:
        return None
    attributes = (
        fields["specversion"],
        fields["id"],
        fields["source"],
        fields["type"],
        fields["partitionkey"],
        fields["datacontenttype"],
    )
    optional = (fields["subject"], fields["traceparent"], fields["tracestate"])
    if any(type(value) is not str for value in attributes) or any(
        value is not None and type(value) is not str for value in optional
    ):
        return None
    time = fields["time"]
    if type(time) is not datetime:
        return None
    return {
        "specversion": fields["specversion"],
        "id": fields["id"],
        "source": fields["source"],
        "type": fields["type"],
        "time": _TIME.dump_python(time, mode="json"),
        "subject": fields["subject"],
        "partitionkey": fields["partitionkey"],
        "datacontenttype": fields["datacontenttype"],
        "data": data,
        "proof": proof_json,
        "traceparent": fields["traceparent"],
        "tracestate": fields["tracestate"],
    }


def _plain_tree(value: dict[str, object]) -> bool:
    """Whether `value` holds only exact dicts with str keys, lists, str, int, bool and None."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key, child in item.items():  # type: ignore[attr-defined]
                if type(key) is not str:
                    return False
                if type(child) not in _PLAIN_LEAVES:
                    stack.append(child)
        elif kind is list:
            for child in item:  # type: ignore[attr-defined]
                if type(child) not in _PLAIN_LEAVES:
                    stack.append(child)
        else:
            return False
    return True


def encode_envelope(envelope: Envelope) -> bytes:
    """The canonical bytes of the whole envelope (the Kafka record value)."""
    return _canonical(*_envelope_json(envelope))


def signing_bytes(envelope: Envelope) -> bytes:
    """The canonical bytes a proof signs: the envelope without `proof`, `traceparent` and `tracestate`."""
    body, plain = _envelope_json(envelope)
    for name in UNSIGNED_ATTRIBUTES:
        body.pop(name, None)
    return _canonical(body, plain)


def decode_envelope(raw: bytes | None) -> Envelope:
    """Parse record bytes into an envelope, or raise EventDecodeError naming the fault."""
    if raw is None:
        raise EventDecodeError("empty_record", "record has no value (tombstone?)")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventDecodeError("oversize", f"record of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise EventDecodeError("invalid_envelope", _first_error(exc)) from exc
    try:
        # Everything ATB signs or digests is canonical JSON: a float or a >64-bit
        # integer anywhere would fail later, deep in a handler. Refuse it here.
        canonical_json(envelope.data)
    except CanonicalJsonError as exc:
        raise EventDecodeError("invalid_envelope", f"data is not canonical JSON: {exc}") from exc
    return envelope


class EnvelopeHeader(NamedTuple):
    """An envelope's attributes, without its data and proof."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str | None


def decode_header(raw: bytes | None) -> EnvelopeHeader:
    """The attributes `decode_envelope(raw)` would give, or the EventDecodeError it would raise.

    For a reader that needs only the attributes, once per record (the audit store). A
    plain envelope is validated by a native decoder (msgspec) against the same rules as
    `Envelope` in about 60% of the model's time; whatever it refuses, valid or
    not, goes to `decode_envelope` itself, which decides and names the fault. So this
    never accepts what `decode_envelope` refuses: tests/unit/test_contracts_header.py
    holds the two to that over a corpus of near-misses and generated envelopes.
    """
    return decode_header_and_data(raw)[0]


def decode_header_and_data(raw: bytes | None) -> tuple[EnvelopeHeader, dict[str, Any]]:
    """`decode_header`, and the envelope's `data` object as read on the way (not validated against
    the payload model its type names): for a reader that needs a few of its fields too, without
    reading the bytes again (the audit store's facets and audit names). The data is the caller's."""
    plain = _plain_header(raw)
    if plain is not None:
        return plain
    envelope = decode_envelope(raw)
    return EnvelopeHeader(envelope.id, envelope.source, envelope.type, envelope.time, envelope.subject), envelope.data


# The rules of `Envelope` and `Proof`, for msgspec. Where the two libraries differ, the
# stricter reading is taken here (a refusal only costs the fallback): `\Z` because
# Python's `$` also matches before a final newline, which pydantic's regex does not;
# the time as a string, checked below, because the two datetime parsers differ at the edges.
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})\Z"


class _PlainProof(msgspec.Struct, forbid_unknown_fields=True):
    sig: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    x5c: Annotated[list[str], msgspec.Meta(min_length=1, max_length=8)]
    alg: Literal["Ed25519"] = "Ed25519"


class _PlainEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    type: Annotated[str, msgspec.Meta(pattern=r"^atb\.[a-z_]+\.[a-z_]+\.v[0-9]+\Z")]
    time: Annotated[str, msgspec.Meta(pattern=_RFC3339)]
    partitionkey: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    data: dict[str, Any]
    specversion: Literal["1.0"] = "1.0"
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    proof: _PlainProof | None = None
    traceparent: Annotated[str, msgspec.Meta(pattern=TRACEPARENT_PATTERN.replace("$", r"\Z"))] | None = None
    tracestate: Annotated[str, msgspec.Meta(max_length=TRACESTATE_MAX, pattern=r"^[ -~]*\Z")] | None = None


def _no_float(text: str) -> object:
    raise ValueError(f"float {text}: not canonical JSON")


# A float anywhere in `data` fails the decoding itself: no walk over the values afterwards.
_PLAIN = msgspec.json.Decoder(_PlainEnvelope, float_hook=_no_float)


_PLAIN_NESTING = 128
"""At most this many `[` and `{` in a record for the fast path: its nesting is then below the
model's parser limit (200 levels), which msgspec does not know of, and far from the depth at
which msgspec's own recursion gives up with a RecursionError. A count, not a depth: brackets
inside strings count too, which only sends more records to the model."""


def _plain_header(raw: bytes | None) -> tuple[EnvelopeHeader, dict[str, Any]] | None:
    """The header and data of a plainly valid envelope; None when in any doubt (never wrong, may give up)."""
    if raw is None or len(raw) > MAX_EVENT_BYTES or raw.count(b"[") + raw.count(b"{") > _PLAIN_NESTING:
        return None
    try:
        envelope = _PLAIN.decode(raw)
        moment = datetime.fromisoformat(envelope.time)
        # What is left of canonical_json's refusals once floats are out: integers beyond 64 bits.
        orjson.dumps(envelope.data)
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError):
        return None
    return EnvelopeHeader(envelope.id, envelope.source, envelope.type, moment, envelope.subject), envelope.data


def payload_of(envelope: Envelope) -> EventPayload:
    """Validate the envelope's data against the model its `type` names."""
    model = EVENT_TYPES.get(envelope.type)
    if model is None:
        raise EventDecodeError("unknown_type", f"unknown event type {envelope.type!r}")
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        raise EventDecodeError("invalid_payload", _first_error(exc)) from exc


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "$"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {first.get('msg', 'invalid')}{more}"
