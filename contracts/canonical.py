"""One canonical JSON serialisation for everything ATB signs, hashes or stores.

Sign and hash bytes, not objects (docs/architecture.md §4.3): every digest, event proof and
audit leaf is computed over `canonical_json(...)`. The form is RFC 8785-like for
the values ATB uses: UTF-8, object keys sorted, no insignificant whitespace,
integers as integers. Floats are refused: amounts travel as strings or integers,
so no two producers can disagree on a float's spelling.

This module does not know about events or keys.
"""

from __future__ import annotations

import hashlib

import orjson

from contracts.errors import CanonicalJsonError

__all__ = ["CanonicalJsonError", "canonical_json", "sha256_digest"]


_SCALARS = frozenset({str, int, bool, type(None)})


def _reject_floats(value: object) -> None:
    # Fast pass, iterative with exact type checks: this runs on every event ATB
    # encodes or decodes (abstract-base-class isinstance checks made it the hottest
    # function). Only containers and floats are pushed; strings and integers, most of
    # the values, stop at one type check. Only when it finds a fault does the slow pass
    # work out where.
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            assert isinstance(item, dict)
            for key, child in item.items():
                if type(key) is not str:
                    _locate(value, "$")
                if type(child) not in _SCALARS:
                    stack.append(child)
        elif kind is list or kind is tuple:
            assert isinstance(item, list | tuple)
            for child in item:
                if type(child) not in _SCALARS:
                    stack.append(child)
        elif kind is float:
            _locate(value, "$")


def _locate(value: object, path: str) -> None:
    """Raise CanonicalJsonError naming the JSON path of the first fault in `value`.

    Iterative, depth first in document order: a hostile value nested thousands deep
    is named like any other, never a RecursionError.
    """
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            raise CanonicalJsonError(f"float at {where}: encode numbers as integers or strings")
        if isinstance(item, dict):
            children: list[tuple[object, str]] = []
            for key, child in item.items():
                if not isinstance(key, str):
                    raise CanonicalJsonError(f"non-string key at {where}")
                children.append((child, f"{where}.{key}"))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(child, f"{where}[{index}]") for index, child in enumerate(item)]))


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
