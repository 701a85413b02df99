"""contracts.canonical: the one serialisation every digest, proof and audit leaf uses."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from contracts.canonical import CanonicalJsonError, canonical_json, sha256_digest

GOLDEN_VALUE: dict[str, object] = {"b": [1, "ü", {"z": None, "a": True}], "a": "x", "é": -7}
GOLDEN_BYTES = '{"a":"x","b":[1,"ü",{"a":true,"z":null}],"é":-7}'.encode()
# Computed once from GOLDEN_BYTES and pinned: a change of serialisation breaks every stored digest.
GOLDEN_DIGEST = "sha256:d5938391098b14ba9b020f46fe49a160cb873c8ba248980b1ef78163493afc98"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"b": 1, "a": 2}, b'{"a":2,"b":1}', id="top-level keys sorted"),
        pytest.param({"o": {"y": 1, "x": {"d": 0, "c": 0}}}, b'{"o":{"x":{"c":0,"d":0},"y":1}}', id="nested sorted"),
        pytest.param({"a": [3, 1, 2]}, b'{"a":[3,1,2]}', id="list order kept"),
        pytest.param({"a": (1, 2)}, b'{"a":[1,2]}', id="tuple as array"),
        pytest.param(
            {"k": "v", "n": None, "t": True, "f": False}, b'{"f":false,"k":"v","n":null,"t":true}', id="literals"
        ),
        pytest.param(
            {"big": 2**63 - 1, "neg": -(2**63)},
            b'{"big":9223372036854775807,"neg":-9223372036854775808}',
            id="64-bit ints as ints",
        ),
        pytest.param({"s": "a b\tc"}, b'{"s":"a b\\tc"}', id="control chars escaped, spaces kept"),
        pytest.param({}, b"{}", id="empty object"),
        pytest.param([], b"[]", id="empty array"),
    ],
)
def test_canonical_json_sorted_and_compact(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize("text", ["ü", "é", "日本語", "emoji 🙂", "Zürich → Genève"])
def test_non_ascii_stays_utf8(text: str) -> None:
    out = canonical_json({"t": text})
    assert out == b'{"t":"' + text.encode("utf-8") + b'"}'
    assert b"\\u" not in out


def test_output_is_compact_and_round_trips() -> None:
    value = {"z": [1, {"b": "x", "a": None}], "a": {"k": "ü"}}
    out = canonical_json(value)
    assert b" " not in out
    assert b"\n" not in out
    assert json.loads(out) == value
    assert canonical_json(json.loads(out)) == out


def test_key_order_of_input_does_not_matter() -> None:
    assert canonical_json({"a": 1, "b": {"c": 2, "d": 3}}) == canonical_json({"b": {"d": 3, "c": 2}, "a": 1})


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param(1.0, "$", id="bare float"),
        pytest.param({"amount": 1.5}, "$.amount", id="top-level"),
        pytest.param({"a": {"b": {"c": 0.1}}}, "$.a.b.c", id="nested object"),
        pytest.param({"a": [1, 2, 3.0]}, "$.a[2]", id="in list"),
        pytest.param({"a": ({"b": [float("nan")]},)}, "$.a[0].b[0]", id="nan in tuple in list"),
        pytest.param([{"x": float("inf")}], "$[0].x", id="inf in top-level list"),
    ],
)
def test_floats_rejected_anywhere(value: object, path: str) -> None:
    with pytest.raises(CanonicalJsonError, match=re.escape(f"float at {path}")):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1: "a"}, id="int key"),
        pytest.param({"ok": {None: 1}}, id="nested None key"),
        pytest.param({"ok": [{(1, 2): 1}]}, id="tuple key in list"),
        pytest.param({b"k": 1}, id="bytes key"),
    ],
)
def test_non_string_keys_rejected(value: object) -> None:
    with pytest.raises(CanonicalJsonError, match="non-string key"):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"s": {1, 2}}, id="set"),
        pytest.param({"o": object()}, id="arbitrary object"),
        pytest.param({"i": 2**64}, id="int beyond 64 bits"),
    ],
)
def test_unserialisable_values_are_canonical_json_errors(value: object) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json(value)


def test_canonical_json_error_is_a_value_error() -> None:
    assert issubclass(CanonicalJsonError, ValueError)


def test_golden_bytes_and_digest() -> None:
    assert canonical_json(GOLDEN_VALUE) == GOLDEN_BYTES
    assert sha256_digest(GOLDEN_VALUE) == GOLDEN_DIGEST
    assert "sha256:" + hashlib.sha256(GOLDEN_BYTES).hexdigest() == GOLDEN_DIGEST


@pytest.mark.parametrize(
    "value", [{}, {"a": 1}, [1, "two", None], {"nested": {"ü": ["x", {"y": False}]}}, "plain string", 0]
)
def test_sha256_digest_format(value: object) -> None:
    digest = sha256_digest(value)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert digest == "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def test_sha256_digest_stable_across_key_order_and_distinct_across_values() -> None:
    assert sha256_digest({"a": 1, "b": 2}) == sha256_digest({"b": 2, "a": 1})
    digests = {sha256_digest(v) for v in ({"a": 1}, {"a": 2}, {"a": "1"}, {"A": 1}, {"a": [1]}, {"a": True})}
    assert len(digests) == 6


def test_sha256_digest_rejects_floats() -> None:
    with pytest.raises(CanonicalJsonError):
        sha256_digest({"a": 0.5})


def test_a_float_nested_thousands_deep_is_named_not_a_recursion_error() -> None:
    value: object = 1.5
    for _ in range(5000):
        value = [value]
    with pytest.raises(CanonicalJsonError, match=r"float at \$(\[0\]){5000}:"):
        canonical_json(value)


def test_the_first_fault_in_document_order_is_named() -> None:
    with pytest.raises(CanonicalJsonError, match=r"float at \$\.a\[1\]\.b:"):
        canonical_json({"a": [1, {"b": 2.5}], "z": 0.5})
    with pytest.raises(CanonicalJsonError, match=r"non-string key at \$\.a"):
        canonical_json({"a": {1: "x"}})
