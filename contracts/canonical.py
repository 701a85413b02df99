"""One canonical JSON serialisation for everything ATB signs, hashes or stores.

Sign and hash bytes, not objects (STYLE.md habit 3): every digest, event proof and
audit leaf is computed over `canonical_json(...)`. The form is RFC 8785-like for
the values ATB uses: UTF-8, object keys sorted, no insignificant whitespace,
integers as integers. Floats are refused: amounts travel as strings or integers,
so no two producers can disagree on a float's spelling.

This module does not know about events or keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import orjson

__all__ = ["CanonicalJsonError", "canonical_json", "sha256_digest"]


class CanonicalJsonError(ValueError):
    """A value cannot be serialised canonically (a float, a non-string key, ...)."""


def _reject_floats(value: object, path: str = "$") -> None:
    if isinstance(value, float):
        raise CanonicalJsonError(f"float at {path}: encode numbers as integers or strings")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJsonError(f"non-string key at {path}")
            _reject_floats(item, f"{path}.{key}")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, item in enumerate(value):
            _reject_floats(item, f"{path}[{index}]")


def canonical_json(value: object) -> bytes:
    """Serialise `value` canonically: sorted keys, compact, UTF-8, no floats."""
    _reject_floats(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise CanonicalJsonError(str(exc)) from exc


def sha256_digest(value: object) -> str:
    """`sha256:<hex>` of the canonical bytes of `value`."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
