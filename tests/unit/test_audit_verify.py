"""audit_sink.domain.verify, in memory: each kind of damage is named, and an intact store has no problem."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import Frontier, leaf_hash
from audit_sink.domain.verify import LeafEntry, StoreSnapshot, Tombstone, audit_report
from tests.audit_support import ORIGIN, rows

N = 40


def _intact() -> StoreSnapshot:
    stored = rows(0, N)
    hashes = [leaf_hash(leaf_bytes(r)) for r in stored]
    leaves = [
        LeafEntry(i, (r.topic, r.partition, r.offset), h) for i, (r, h) in enumerate(zip(stored, hashes, strict=True))
    ]
    checkpoints = [Checkpoint(ORIGIN, n, Frontier.of(hashes[:n]).root()) for n in (10, 25, N)]
    return StoreSnapshot(leaves, list(enumerate(stored, start=1)), [], checkpoints, [], ORIGIN)


def _altered(s: StoreSnapshot) -> StoreSnapshot:
    seq, row = s.rows[5]
    changed = row._replace(raw=row.raw + b" ")
    return dataclasses.replace(s, rows=[*s.rows[:5], (seq, changed), *s.rows[6:]])


def _deleted(s: StoreSnapshot) -> StoreSnapshot:
    return dataclasses.replace(s, rows=[*s.rows[:5], *s.rows[6:]])


def _inserted(s: StoreSnapshot) -> StoreSnapshot:
    return dataclasses.replace(s, rows=[*s.rows, (999, rows(500, 1)[0])])


def _reordered(s: StoreSnapshot) -> StoreSnapshot:
    r = list(s.rows)
    r[3], r[4] = (r[3][0], r[4][1]), (r[4][0], r[3][1])
    return dataclasses.replace(s, rows=r)


def _truncated(s: StoreSnapshot) -> StoreSnapshot:
    return dataclasses.replace(s, rows=s.rows[:30], leaves=s.leaves[:30])


def _forked(s: StoreSnapshot) -> StoreSnapshot:
    other = Checkpoint(ORIGIN, 25, leaf_hash(b"another tree"))
    return dataclasses.replace(s, checkpoints=[*s.checkpoints, other])


def _forged_tombstone(s: StoreSnapshot) -> StoreSnapshot:
    return dataclasses.replace(s, rows=[*s.rows[:5], *s.rows[6:]], tombstones=[Tombstone(5, b"{}", "purge-x")])


def _foreign_origin(s: StoreSnapshot) -> StoreSnapshot:
    return dataclasses.replace(s, origin="someone.else/log")


CASES: dict[str, tuple[Callable[[StoreSnapshot], StoreSnapshot], str]] = {
    "altered": (_altered, "was altered"),
    "deleted": (_deleted, "missing (deleted)"),
    "inserted": (_inserted, "has no leaf (inserted)"),
    "reordered": (_reordered, "out of order"),
    "truncated": (_truncated, "truncated"),
    "forked": (_forked, "fork: two signed checkpoints of size 25"),
    "forged tombstone": (_forged_tombstone, "has no signed purge record"),
    "foreign origin": (_foreign_origin, "is for origin"),
}


def test_an_intact_store_verifies() -> None:
    report = audit_report(_intact())
    assert report.ok, report.problems
    assert (report.leaves, report.rows, report.checkpoints, report.uncovered) == (N, N, 3, 0)


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_of_damage_is_named(case: str) -> None:
    damage, expected = CASES[case]
    report = audit_report(damage(_intact()))
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems


def test_no_checkpoint_is_a_problem() -> None:
    report = audit_report(dataclasses.replace(_intact(), checkpoints=[]))
    assert report.problems == ("no signed checkpoint: nothing proves the store was not rewritten",)
