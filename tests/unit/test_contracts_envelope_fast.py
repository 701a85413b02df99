"""contracts.encode_envelope and signing_bytes build an envelope's JSON without pydantic's
serialiser when its data is plain JSON (`_plain_body`). These tests hold that path to
the serialiser's: for generated envelopes (data trees with every JSON type, floats and
integers beyond 64 bits included, times in any offset and precision, with and without
proof, subject and trace context) the JSON object, the record bytes and the signed bytes
are the same as pydantic's dump through canonical_json, or both refuse with the same
error. Envelopes whose data was put in without validation (tuples, subclasses, dates)
take the serialiser; validated ones take the fast path, or it would be dead code.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import AuditEvent, Envelope, JsonObject, Proof, encode_envelope, make_envelope, signing_bytes
from contracts.canonical import CanonicalJsonError, canonical_json
from contracts.envelope import UNSIGNED_ATTRIBUTES, _envelope_json, _plain_body

SOURCE = "spiffe://atb.example/service/test"


def _reference_body(envelope: Envelope) -> dict[str, object]:
    body: dict[str, object] = envelope.model_dump(mode="json")
    for name in ("proof", "subject", "traceparent", "tracestate"):
        if body.get(name) is None:
            body.pop(name, None)
    return body


def _reference(envelope: Envelope) -> tuple[bytes | str, bytes | str]:
    """(record bytes, signed bytes) the serialiser's way, or the error each raises."""
    body = _reference_body(envelope)
    try:
        record: bytes | str = canonical_json(body)
    except CanonicalJsonError as exc:
        record = f"error: {exc}"
    for name in UNSIGNED_ATTRIBUTES:
        body.pop(name, None)
    try:
        signed: bytes | str = canonical_json(body)
    except CanonicalJsonError as exc:
        signed = f"error: {exc}"
    return record, signed


def _actual(envelope: Envelope) -> tuple[bytes | str, bytes | str]:
    try:
        record: bytes | str = encode_envelope(envelope)
    except CanonicalJsonError as exc:
        record = f"error: {exc}"
    try:
        signed: bytes | str = signing_bytes(envelope)
    except CanonicalJsonError as exc:
        signed = f"error: {exc}"
    return record, signed


_keys = st.text(max_size=8)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=12),
)
_json = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=20,
)
_wild_leaves = st.one_of(
    _leaves,
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=2**64, max_value=2**70),
)
_wild_json = st.recursive(
    _wild_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=20,
)
_offsets = st.integers(min_value=-23 * 3600, max_value=23 * 3600).map(lambda s: timezone(timedelta(seconds=s)))
_times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 1, 1), timezones=_offsets)
_proofs = st.none() | st.builds(
    Proof,
    alg=st.sampled_from(["Ed25519", "ES256", "ES384", "RS256"]),
    sig=st.text(alphabet="abcXYZ019-_", min_size=1, max_size=20),
    x5c=st.lists(st.text(alphabet="abc+/=", min_size=1, max_size=10), min_size=1, max_size=3).map(tuple),
)
_traceparent = st.none() | st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01")


@st.composite
def _envelopes(draw: st.DrawFn, data: st.SearchStrategy[object]) -> Envelope:
    return Envelope.model_validate(
        {
            "id": draw(st.text(min_size=1, max_size=10)),
            "source": SOURCE,
            "type": "atb.audit.event.v1",
            "time": draw(_times),
            "subject": draw(st.none() | st.text(max_size=10)),
            "partitionkey": draw(st.text(min_size=1, max_size=10)),
            "data": draw(st.dictionaries(_keys, data, max_size=6)),
            "proof": draw(_proofs),
            "traceparent": draw(_traceparent),
            "tracestate": draw(st.none() | st.text(alphabet="abc=,", max_size=10)),
        }
    )


@settings(max_examples=400, deadline=None)
@given(_envelopes(_json))
def test_plain_envelopes_take_the_fast_path_with_the_serialisers_output(envelope: Envelope) -> None:
    fast = _plain_body(envelope)
    assert fast is not None, "a validated envelope with plain data must take the fast path"
    body, plain = _envelope_json(envelope)
    assert plain
    assert body == _reference_body(envelope)
    assert _actual(envelope) == _reference(envelope)


@settings(max_examples=400, deadline=None)
@given(_envelopes(_wild_json))
def test_floats_and_big_integers_are_refused_as_before(envelope: Envelope) -> None:
    assert _actual(envelope) == _reference(envelope)


class _Colour(enum.StrEnum):
    RED = "red"


class _Text(str):
    pass


def _made() -> Envelope:
    payload = AuditEvent(
        audit_type="broker_action_allowed",
        request_id="req-1",
        actor=SOURCE,
        outcome="success",
        details={"n": 3, "tags": ["a"], "nested": {"ok": True, "none": None}},
        occurred_at=datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC),
    )
    return make_envelope(payload, source=SOURCE, event_id="evt-1", time=datetime(2026, 11, 26, 10, 0, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "data",
    [
        {"t": (1, 2)},
        {"s": _Text("x")},
        {"c": _Colour.RED},
        {"d": datetime(2026, 1, 1, tzinfo=UTC)},
        {"f": 1.5},
        {"deep": [{"f": [0.0]}]},
        {1: "non-string key"},
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic warns about the unvalidated values it serialises
def test_data_put_in_without_validation_goes_to_the_serialiser(data: dict[object, object]) -> None:
    envelope = _made().model_copy(update={"data": data})
    assert _plain_body(envelope) is None
    assert _actual(envelope) == _reference(envelope)


def test_an_integer_beyond_64_bits_is_refused_on_the_fast_path_as_before() -> None:
    envelope = _made().model_copy(update={"data": {"big": 2**64}})
    assert _plain_body(envelope) is not None
    record, signed = _actual(envelope)
    assert record == signed == "error: Integer exceeds 64-bit range"
    assert _actual(envelope) == _reference(envelope)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_unvalidated_proof_or_attribute_goes_to_the_serialiser() -> None:
    made = _made()
    for update in (
        {"proof": {"alg": "Ed25519", "sig": "c2ln", "x5c": ["Y2VydA"]}},
        {"subject": _Text("req-1")},
        {"time": "2026-11-26T10:00:00Z"},
    ):
        envelope = made.model_copy(update=update)
        assert _plain_body(envelope) is None
        assert _actual(envelope) == _reference(envelope)


def test_made_envelopes_take_the_fast_path() -> None:
    envelope = _made()
    assert _plain_body(envelope) is not None
    assert _actual(envelope) == _reference(envelope)
    assert encode_envelope(envelope).startswith(b'{"data":{"actor":')


_details = st.dictionaries(_keys, _json, max_size=5)


@settings(max_examples=200, deadline=None)
@given(details=_details, request_id=st.none() | st.text(min_size=1, max_size=20), time=_times)
def test_make_envelope_is_the_validated_envelope_of_its_payload(
    details: JsonObject, request_id: str | None, time: datetime
) -> None:
    payload = AuditEvent(
        audit_type="poa_issued",
        request_id=request_id,
        actor=SOURCE,
        outcome="success",
        details=details,
        occurred_at=time,
    )
    made = make_envelope(payload, source=SOURCE, event_id="evt-1", time=time)
    validated = Envelope.model_validate(
        {
            "id": "evt-1",
            "source": SOURCE,
            "type": payload.event_type,
            "time": time,
            "subject": request_id,
            "partitionkey": payload.partition_key(),
            "data": payload.model_dump(mode="json"),
        }
    )
    assert made == validated
    assert made.model_fields_set == validated.model_fields_set
    assert encode_envelope(made) == encode_envelope(validated)
