"""Quorum by groups: which people fill which requirement, and what is still missing.

The policy may ask for a *composition* of approvers per tier or per action
(docs/quorum-and-risk.md), on top of the total count of distinct people
(`Requirements.approvals`):

* ``all_of``: every entry ``{group, count}`` must be met;
* ``any_of``: at least one entry must be met (none listed: no such condition);
* the total: at least that many distinct eligible people, whatever their groups.

All with distinct people: a person in two groups fills one requirement only.
`assign` decides who fills what as a maximum bipartite matching between people
and requirement *slots* (one slot per required approver of a group), by
augmenting paths (Kuhn's algorithm), not greedily: whether a set of approvers
satisfies the composition depends on the set alone, never on the order the
votes arrived in. People are tried in the order of their normalised principal,
so the assignment itself is a function of the set too, and the issuer, which
recomputes it from a quorum's evidence, gets the same one approvals published.

`QuorumResult` says whether the quorum is satisfied, which requirement each
person was assigned to, and what is missing as data (`Shortfall`, each with a
`ReasonCode`). Approvals' tally (through `contracts.eligibility.ThresholdResult`),
the issuer's re-check, chat's hints and replay all read it from here.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

from contracts.directory import normalize
from contracts.errors import RequirementsError
from contracts.reasons import Reason, ReasonCode

__all__ = [
    "MAX_GROUP_COUNT",
    "Assignment",
    "Composition",
    "GroupCount",
    "Member",
    "QuorumResult",
    "Shortfall",
    "assign",
]

MAX_GROUP_COUNT = 10
"""No entry asks for more people than a request may require at all (`RequirementsRecord.approvals` ≤ 10)."""
_MAX_ENTRIES = 8


@dataclass(frozen=True)
class GroupCount:
    """``count`` distinct people of ``group``."""

    group: str
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.group, str) or not self.group.strip():
            raise RequirementsError(f"composition: a group must be a non-empty string, not {self.group!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 1 <= self.count <= MAX_GROUP_COUNT:
            raise RequirementsError(
                f"composition: {self.group}: count must be an integer from 1 to {MAX_GROUP_COUNT}, not {self.count!r}"
            )

    def describe(self) -> str:
        return f"{self.count} {self.group}"


@dataclass(frozen=True)
class Composition:
    """Which groups a quorum must be made of; the empty composition asks only for the total."""

    all_of: tuple[GroupCount, ...] = ()
    any_of: tuple[GroupCount, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "all_of", tuple(self.all_of))
        object.__setattr__(self, "any_of", tuple(self.any_of))
        for name in ("all_of", "any_of"):
            entries: tuple[object, ...] = getattr(self, name)
            if len(entries) > _MAX_ENTRIES:
                raise RequirementsError(f"composition: {name}: at most {_MAX_ENTRIES} entries")
            if not all(isinstance(e, GroupCount) for e in entries):
                raise RequirementsError(f"composition: {name}: entries must be GroupCount values")
            groups = [e.group for e in getattr(self, name)]
            if len(set(groups)) != len(groups):
                raise RequirementsError(f"composition: {name}: a group is listed twice")

    @property
    def empty(self) -> bool:
        return not self.all_of and not self.any_of

    @property
    def groups(self) -> frozenset[str]:
        """Every group the composition names."""
        return frozenset(e.group for e in (*self.all_of, *self.any_of))

    @property
    def minimum(self) -> int:
        """The fewest distinct people that can satisfy it: all of ``all_of`` plus the smallest ``any_of``."""
        return sum(e.count for e in self.all_of) + min((e.count for e in self.any_of), default=0)

    def describe(self) -> str:
        """For humans: ``1 manager + 1 compliance``, ``... + one of (1 security | 1 compliance)``."""
        parts = [e.describe() for e in self.all_of]
        if self.any_of:
            parts.append("one of (" + " | ".join(e.describe() for e in self.any_of) + ")")
        return " + ".join(parts)

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "all_of": [{"group": e.group, "count": e.count} for e in self.all_of],
            "any_of": [{"group": e.group, "count": e.count} for e in self.any_of],
        }

    @classmethod
    def from_json(cls, value: JsonValue) -> Composition:
        """Parse ``{"all_of": [{"group", "count"}], "any_of": [...]}``; None or ``{}`` is the empty composition."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise RequirementsError(f"composition must be an object, not {type(value).__name__}")
        unknown = sorted(set(value) - {"all_of", "any_of"})
        if unknown:
            raise RequirementsError(f"composition: unknown field(s) {', '.join(unknown)}")
        return cls(_entries("all_of", value.get("all_of")), _entries("any_of", value.get("any_of")))


def _entries(name: str, value: JsonValue) -> tuple[GroupCount, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequirementsError(f"composition: {name} must be a list")
    out: list[GroupCount] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) != {"group", "count"}:
            raise RequirementsError(f"composition: {name}[{i}] must be exactly {{group, count}}")
        group, count = entry["group"], entry["count"]
        if not isinstance(group, str) or not isinstance(count, int) or isinstance(count, bool):
            raise RequirementsError(f"composition: {name}[{i}]: group must be a string and count an integer")
        out.append(GroupCount(group, count))
    return tuple(out)


@dataclass(frozen=True)
class Member:
    """One distinct person who counts, and the groups the directory puts them in."""

    principal: str
    groups: frozenset[str]


@dataclass(frozen=True)
class Assignment:
    """The requirement one person fills: a group of the composition, or None (counts toward the total only)."""

    principal: str
    group: str | None


@dataclass(frozen=True)
class Shortfall:
    """Something the quorum still lacks, as data.

    ``all_of``: ``missing`` more people of ``group``; ``any_of``: ``missing`` more of
    ``group``, the alternative closest to being met (the others are in the
    composition); ``total``: ``missing`` more distinct people of any eligible group.
    """

    kind: Literal["all_of", "any_of", "total"]
    group: str | None
    missing: int

    @property
    def code(self) -> ReasonCode:
        return ReasonCode.QUORUM_SHORT if self.kind == "total" else ReasonCode.COMPOSITION_NOT_MET

    def reason(self, composition: Composition) -> Reason:
        if self.kind == "total":
            return Reason(self.code, f"{self.missing} more distinct approver(s) needed")
        if self.kind == "any_of":
            others = " | ".join(e.describe() for e in composition.any_of if e.group != self.group)
            extra = f" (or instead: {others})" if others else ""
            return Reason(self.code, f"{self.missing} more from {self.group}{extra}")
        return Reason(self.code, f"{self.missing} more from {self.group}")


@dataclass(frozen=True)
class QuorumResult:
    """Who fills which requirement and what is missing; `satisfied` when nothing is."""

    total: int
    composition: Composition
    assignments: tuple[Assignment, ...]
    """One per distinct person, in the order of their normalised principal."""
    alternative: GroupCount | None
    """The ``any_of`` entry the assignment uses (the first met, else the one closest to being met)."""
    shortfalls: tuple[Shortfall, ...]
    _by_principal: Mapping[str, str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_principal", {normalize(a.principal): a.group for a in self.assignments})

    @property
    def satisfied(self) -> bool:
        return not self.shortfalls

    @property
    def missing(self) -> int:
        """The fewest more distinct people that could satisfy the quorum (each fills at most one open slot)."""
        slots = sum(s.missing for s in self.shortfalls if s.kind != "total")
        people = sum(s.missing for s in self.shortfalls if s.kind == "total")
        return max(slots, people)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(s.reason(self.composition) for s in self.shortfalls)

    def group_of(self, principal: str) -> str | None:
        """The group the person's approval was assigned to, None when it counts toward the total only."""
        return self._by_principal.get(normalize(principal))

    def describe(self) -> str:
        if self.satisfied:
            return "satisfied"
        return "; ".join(r.detail for r in self.reasons)


def assign(total: int, composition: Composition, members: Iterable[Member]) -> QuorumResult:
    """Assign distinct people to the composition's requirements (a maximum matching) and judge the quorum.

    `members` must be distinct people (one entry per principal); a repeated
    principal is counted once, with the union of its groups.
    """
    people = _distinct(members)
    alternatives: tuple[GroupCount | None, ...] = composition.any_of or (None,)
    best: tuple[int, GroupCount | None, list[tuple[str, str]], list[int | None]] | None = None
    for alternative in alternatives:
        slots = [("all_of", e.group) for e in composition.all_of for _ in range(e.count)]
        if alternative is not None:
            slots += [("any_of", alternative.group)] * alternative.count
        owner = _max_matching([groups for _, groups in people], [group for _, group in slots])
        unfilled = owner.count(None)
        if best is None or unfilled < best[0]:
            best = (unfilled, alternative, slots, owner)
        if unfilled == 0:
            break
    assert best is not None
    _, alternative, slots, owner = best
    group_of = {person: slots[s][1] for s, person in enumerate(owner) if person is not None}
    assignments = tuple(Assignment(principal, group_of.get(i)) for i, (principal, _) in enumerate(people))
    open_slots: dict[tuple[str, str], int] = {}
    for s, person in enumerate(owner):
        if person is None:
            open_slots[slots[s]] = open_slots.get(slots[s], 0) + 1
    shortfalls = [
        Shortfall("all_of", e.group, open_slots[("all_of", e.group)])
        for e in composition.all_of
        if ("all_of", e.group) in open_slots
    ]
    if alternative is not None and ("any_of", alternative.group) in open_slots:
        shortfalls.append(Shortfall("any_of", alternative.group, open_slots[("any_of", alternative.group)]))
    if len(people) < total:
        shortfalls.append(Shortfall("total", None, total - len(people)))
    return QuorumResult(total, composition, assignments, alternative, tuple(shortfalls))


def _distinct(members: Iterable[Member]) -> list[tuple[str, frozenset[str]]]:
    merged: dict[str, tuple[str, frozenset[str]]] = {}
    for member in members:
        key = normalize(member.principal)
        principal, groups = merged.get(key, (member.principal, frozenset()))
        merged[key] = (principal, groups | frozenset(member.groups))
    return [merged[k] for k in sorted(merged)]


def _max_matching(people: list[frozenset[str]], slots: list[str]) -> list[int | None]:
    """A maximum matching of people to slots (a person fits a slot of one of their groups); slot → person."""
    owner: list[int | None] = [None] * len(slots)

    def augment(person: int, seen: set[int]) -> bool:
        for s, group in enumerate(slots):
            if s in seen or group not in people[person]:
                continue
            seen.add(s)
            current = owner[s]
            if current is None or augment(current, seen):
                owner[s] = person
                return True
        return False

    for person in range(len(people)):
        augment(person, set())
    return owner
