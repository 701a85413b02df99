"""contracts.decode_header against contracts.decode_envelope: the same answer for every record.

`decode_header` validates plain envelopes natively and leaves everything else to
`decode_envelope`. Its fast path must never accept what the model refuses, and must
give the same attributes when both accept. Each record here goes through both: a
corpus of near-misses around every rule of `Envelope` (lengths at the boundary,
patterns with a trailing newline, times the two parsers read differently, floats and
big integers deep in `data`, proofs, duplicate keys, bytes that are not JSON), and
generated envelopes. The valid ones must take the fast path, or it would be dead code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import (
    AuditEvent,
    EventDecodeError,
    decode_envelope,
    decode_header,
    decode_header_and_data,
    encode_envelope,
    make_envelope,
)
from contracts.envelope import MAX_EVENT_BYTES, EnvelopeHeader, _plain_header

SOURCE = "spiffe://atb.example/service/test"
PROOF = {"alg": "Ed25519", "sig": "c2ln", "x5c": ["Y2VydA"]}


def _base(**extra: object) -> dict[str, object]:
    payload = AuditEvent(
        audit_type="broker_action_allowed",
        request_id="req-0001",
        actor=SOURCE,
        outcome="success",
        details={"action": "crm.contact.read", "n": 3, "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
        occurred_at=datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC),
    )
    body: dict[str, object] = json.loads(encode_envelope(make_envelope(payload, source=SOURCE, event_id="evt-1")))
    body.update(extra)
    return body


def _raw(body: dict[str, object]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


VALID = [
    _raw(_base()),
    _raw(_base(proof=PROOF)),
    _raw({k: v for k, v in _base().items() if k not in ("subject", "specversion", "datacontenttype")}),
    _raw(_base(subject=None, proof=None)),
    _raw(_base(id="é" * 128, partitionkey="k" * 256, source="s" * 2048)),
    _raw(_base(time="2026-11-26T10:00:00+05:30")),
    _raw(_base(time="2026-11-26T10:00:00-00:00")),
    _raw(_base(time="2026-11-26T10:00:00.5Z")),
    _raw(_base(data={"big": 2**64 - 1, "neg": -(2**63)})),
]

ATTRIBUTE_VALUES: list[object] = [None, 0, 1.5, True, [], {}, "", "x", "x" * 129, "x" * 257, "x" * 2049, "é" * 129]
TYPES = [
    "atb.audit.event.v1\n",
    "atb.audit.event.v1 ",
    "ATB.audit.event.v1",
    "atb.audit.event.v",
    "atb.aud1t.event.v1",
    "atb.audit.event.v\u0661",
    "xatb.audit.event.v1",
    "atb.audit_x.event_y.v12",
]
TIMES = [
    "2026-11-26T10:00:00",
    "2026-11-26t10:00:00z",
    "2026-11-26 10:00:00Z",
    "2026-11-26T10:00:00.1234567Z",
    "2026-11-26T10:00:00,5Z",
    "2026-11-26T10:00:00+24:00",
    "2026-11-26T10:00:00+23:59",
    "2026-11-26T10:00:60Z",
    "2026-02-30T10:00:00Z",
    "2026-11-26T24:00:00Z",
    "2026-11-26",
    "2026-11-26T10Z",
    "1700000000",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "２０２６-11-26T10:00:00Z",
]
DATA: list[object] = [
    {"x": 1.5},
    {"x": [1, {"y": -0.0}]},
    {"x": 2**64},
    {"x": -(2**63) - 1},
    {"x": "1.5"},
    [],
    "text",
    {"deep": json.loads("[" * 150 + "1" + "]" * 150)},
]
PROOFS: list[object] = [
    {},
    {"sig": "", "x5c": ["a"]},
    {"sig": "s", "x5c": []},
    {"sig": "s", "x5c": ["a"] * 9},
    {"sig": "s", "x5c": [1]},
    {"sig": "s", "x5c": ["a"], "alg": "ed25519"},
    {"sig": "s", "x5c": ["a"], "kid": "k"},
    {"sig": "s" * 257, "x5c": ["a"]},
    {"sig": "s", "x5c": "a"},
    "proof",
]


def _near_misses() -> Iterator[bytes]:
    base = _base()
    for name in base:
        yield _raw({k: v for k, v in base.items() if k != name})
        for value in ATTRIBUTE_VALUES:
            yield _raw({**base, name: value})
    yield from (_raw(_base(type=t)) for t in TYPES)
    yield from (_raw(_base(time=t)) for t in TIMES)
    yield from (_raw(_base(data=d)) for d in DATA)
    yield from (_raw(_base(proof=p)) for p in PROOFS)
    yield from (_raw(_base(specversion=v)) for v in ("1.0 ", "1", 1.0, "2.0"))
    yield from (_raw(_base(datacontenttype=v)) for v in ("application/json; charset=utf-8", "text/json"))
    yield _raw(_base(extension="x"))
    text = _raw(base)
    yield text.replace(b'"id":"evt-1"', b'"id":"evt-1","id":"evt-2"')  # duplicate key: the last wins, in both
    yield text.replace(b'"id":"evt-1"', b'"id":"","id":"evt-2"')
    yield text.replace(b'"id":"evt-1"', b'"id":"\\u00e9vt"')
    yield text.replace(b'"id":"evt-1"', b'"id":"\\ud800"')
    yield text.replace(b'"n":3', b'"n":NaN')
    yield text.replace(b'"n":3', b'"n":Infinity')
    yield text.replace(b'"n":3', b'"n":3e0')
    yield text.replace(b'"n":3', b'"n":123456789012345678901234567890')
    yield b"\xef\xbb\xbf" + text
    yield b"  " + text + b"\n"
    yield text + b" x"
    yield text[:-1]
    yield b"[]"
    yield b""
    yield b"\xff\xfe"
    yield text[:-1] + b',"pad":"' + b"x" * MAX_EVENT_BYTES + b'"}'


def _strict(raw: bytes | None) -> EnvelopeHeader | str:
    try:
        envelope = decode_envelope(raw)
    except EventDecodeError as exc:
        return str(exc)
    return EnvelopeHeader(envelope.id, envelope.source, envelope.type, envelope.time, envelope.subject)


def _same_answer(raw: bytes | None) -> None:
    strict = _strict(raw)
    fast = _plain_header(raw)
    if isinstance(strict, str):
        assert fast is None, f"fast path accepted what the model refuses ({strict}): {raw!r:.200}"
        with pytest.raises(EventDecodeError) as caught:
            decode_header(raw)
        assert str(caught.value) == strict
        return
    header, data = decode_header_and_data(raw)
    assert header == decode_header(raw)
    assert data == decode_envelope(raw).data
    assert header[:3] == strict[:3]
    assert header.subject == strict.subject
    assert header.time == strict.time
    assert header.time.utcoffset() == strict.time.utcoffset()


@pytest.mark.parametrize("raw", VALID, ids=range(len(VALID)))
def test_valid_envelopes_take_the_fast_path_with_the_models_answer(raw: bytes) -> None:
    assert _plain_header(raw) is not None
    _same_answer(raw)


@pytest.mark.parametrize("raw", list(_near_misses()), ids=lambda r: repr(r)[:60])
def test_near_misses_get_the_models_answer(raw: bytes) -> None:
    _same_answer(raw)


def test_no_record_at_all() -> None:
    _same_answer(None)


def _nested(depth: int, opening: str) -> bytes:
    """The base envelope with `data.deep` nested `depth` arrays or objects deep."""
    value = "[" * depth + "1" + "]" * depth if opening == "[" else '{"k":' * depth + "1" + "}" * depth
    return _raw(_base(data={"deep": 0})).replace(b'{"deep": 0}', b'{"deep":' + value.encode() + b"}")


@pytest.mark.parametrize("depth", [150, 197, 198, 199, 200, 250, 300, 990, 1_200, 80_000])
@pytest.mark.parametrize("opening", ["[", "{"])
def test_deep_nesting_gets_the_models_answer_and_never_a_recursion_error(depth: int, opening: str) -> None:
    """The model refuses JSON nested deeper than its parser's limit; the fast path must not accept it,
    and a nesting deep enough to exhaust the native decoder's recursion must not escape as RecursionError."""
    raw = _nested(depth, opening)
    assert len(raw) < MAX_EVENT_BYTES
    _same_answer(raw)


_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
_json = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c), max_leaves=12
)
_attribute = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["", "x" * 128, "x" * 129, "é" * 128, "atb.audit.event.v1", "atb.a.b.v1\n", *TIMES]),
    _json,
)


@given(
    changes=st.dictionaries(
        st.sampled_from(
            ["id", "source", "type", "time", "subject", "partitionkey", "data", "proof", "specversion", "extra"]
        ),
        _attribute,
        max_size=3,
    ),
    data=st.dictionaries(st.text(max_size=5), _json, max_size=4),
)
@settings(max_examples=300, deadline=None)
def test_generated_envelopes_get_the_models_answer(changes: dict[str, object], data: dict[str, object]) -> None:
    _same_answer(_raw(_base(**{"data": data, **changes})))
