"""The CloudEvents 1.0 envelope every ATB record travels in, and its Kafka binding.

ATB uses the *structured* content mode everywhere (REFERENCE.md, CloudEvents over
Kafka): the record value is the whole event as canonical JSON, the Kafka key is
the `partitionkey` extension (the request id), and one header says
`content-type: application/cloudevents+json`. Structured mode keeps every
attribute inside the bytes the audit store keeps and the proof signs.

`proof` is an extension attribute carrying the producer's signature over the
canonical bytes of the envelope *without* `proof` (see `signing_bytes`).

This module parses and builds envelopes; it does not verify proofs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from contracts.canonical import CanonicalJsonError, canonical_json
from contracts.events import EVENT_TYPES, EventPayload, JsonObject

__all__ = [
    "CONTENT_TYPE",
    "CONTENT_TYPE_HEADER",
    "Envelope",
    "EventDecodeError",
    "Proof",
    "decode_envelope",
    "encode_envelope",
    "make_envelope",
    "payload_of",
    "signing_bytes",
]

CONTENT_TYPE = "application/cloudevents+json"
CONTENT_TYPE_HEADER = "content-type"
MAX_EVENT_BYTES = 512 * 1024


class EventDecodeError(ValueError):
    """A record is not a valid ATB event. `code` is a stable, machine-readable reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class Proof(BaseModel):
    """Proof of origin: an Ed25519 signature by the producer's SVID key, with its chain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alg: Literal["Ed25519"] = "Ed25519"
    sig: Annotated[str, Field(min_length=1, max_length=256)]
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
    return Envelope(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=payload.event_type,
        time=time or datetime.now(UTC),
        subject=request_id if isinstance(request_id, str) else None,
        partitionkey=payload.partition_key(),
        data=data,
    )


def _envelope_json(envelope: Envelope) -> JsonObject:
    body = envelope.model_dump(mode="json")
    if body.get("proof") is None:
        body.pop("proof", None)
    if body.get("subject") is None:
        body.pop("subject", None)
    return body


def encode_envelope(envelope: Envelope) -> bytes:
    """The canonical bytes of the whole envelope (the Kafka record value)."""
    return canonical_json(_envelope_json(envelope))


def signing_bytes(envelope: Envelope) -> bytes:
    """The canonical bytes a proof signs: the envelope without its `proof`."""
    body = _envelope_json(envelope)
    body.pop("proof", None)
    return canonical_json(body)


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
