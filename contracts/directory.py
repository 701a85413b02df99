"""Who may approve what: the approver directory and identity normalisation.

An approver is one person (a *principal*) reachable through several identities:
a SPIFFE ID for the `atb vote` CLI, a chat user id attested by the chat service,
an HR id that may also appear as a request's accountable party. The directory
maps every one of those spellings back to the one person, so that the tally can
count distinct *people*, not distinct strings (docs/architecture.md §2.2: approvers
must be distinct principals; self-approval is blocked).

Pure: no I/O. The directory is built from configuration that something else has
read (`Directory.from_mapping` takes the already-parsed JSON). It does not decide
whether a vote counts (`approvals.domain.tally`); it lives in contracts because the
issuer and the chat service must resolve identities exactly as approvals does.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contracts.errors import DirectoryError
from contracts.events import Tier

__all__ = ["Approver", "Directory", "DirectoryError", "normalize"]

_MAX_PRINCIPAL = 256
"""`leg.approval.approver_id` and `leg.dual_control.approvers[].id` allow 256 characters."""
_MAX_TYPE = 64
"""`leg.dual_control.approvers[].type` allows 64 characters."""
_APPROVER_KEYS = frozenset({"principal", "type", "groups", "tiers", "identities"})


def normalize(identity: str) -> str:
    """The one spelling of an identity: NFKC, casefold, NFKC again, strip.

    Strings that differ only in case, width (fullwidth Latin letters), compatibility
    forms (ligatures, circled letters) or surrounding whitespace are one identity.
    The second NFKC is there because casefolding can leave a string that is no
    longer NFKC (``ß`` + combining acute folds to ``ss`` + acute, which composes);
    without it, ``normalize`` would not be idempotent and an identity normalised at
    load time might not equal the same identity normalised at lookup time.
    """
    folded = unicodedata.normalize("NFKC", identity).casefold()
    return unicodedata.normalize("NFKC", folded).strip()


@dataclass(frozen=True)
class Approver:
    """One person who may approve, and every identity that is them.

    `principal` is kept as configured (it goes into the PoA); `identities` are
    stored normalised. The constructor rejects an approver that could never be
    resolved or could never approve anything.
    """

    principal: str
    type: str
    groups: frozenset[str]
    tiers: frozenset[Tier]
    identities: frozenset[str]

    def __post_init__(self) -> None:
        for name in ("groups", "tiers", "identities"):
            value = getattr(self, name)
            # A bare string is iterable: "manager" must not become {"m", "a", "n", ...}.
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise DirectoryError(f"approver {self.principal!r}: {name}: must be a set, not {type(value).__name__}")
            object.__setattr__(self, name, frozenset(value))
        object.__setattr__(self, "identities", frozenset(normalize(i) for i in self.identities))
        _check_approver(self)

    @property
    def keys(self) -> frozenset[str]:
        """Every normalised string that resolves to this approver: identities and principal."""
        return self.identities | {normalize(self.principal)}


def _check_approver(approver: Approver) -> None:
    name = approver.principal
    if not normalize(name):
        raise DirectoryError("approver principal: must not be empty")
    if len(name) > _MAX_PRINCIPAL:
        raise DirectoryError(f"approver {name[:40]!r}...: principal: longer than {_MAX_PRINCIPAL} characters")
    if not approver.type.strip() or len(approver.type) > _MAX_TYPE:
        raise DirectoryError(f"approver {name!r}: type: must be 1 to {_MAX_TYPE} characters, not {approver.type!r}")
    if not approver.groups or any(not g.strip() for g in approver.groups):
        raise DirectoryError(f"approver {name!r}: groups: need at least one, and no empty group names")
    if not approver.identities or "" in approver.identities:
        raise DirectoryError(f"approver {name!r}: identities: need at least one, and no empty identities")
    if not approver.tiers:
        raise DirectoryError(f"approver {name!r}: tiers: need at least one tier to approve")
    if not all(isinstance(t, Tier) for t in approver.tiers):
        raise DirectoryError(f"approver {name!r}: tiers: must be Tier values")
    if Tier.LOW in approver.tiers:
        # docs/architecture.md §2.2: tier low needs no human, so nobody approves it.
        raise DirectoryError(f"approver {name!r}: tiers: tier low needs no approver and cannot be listed")


@dataclass(frozen=True)
class Directory:
    """Every approver, indexed by each normalised identity and principal.

    The constructor rejects two approvers that share a principal or an identity
    (after normalisation): one string must never be two people, or a vote could
    be counted for the wrong person and self-approval checks could be dodged.
    """

    approvers: tuple[Approver, ...]
    _index: Mapping[str, Approver] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "approvers", tuple(self.approvers))
        object.__setattr__(self, "_index", _build_index(self.approvers))

    def resolve(self, identity: str) -> Approver | None:
        """The approver this identity (or principal) belongs to, or None for a stranger."""
        return self._index.get(normalize(identity))

    def same_person(self, a: str, b: str) -> bool:
        """Whether two identity strings denote one person."""
        if normalize(a) == normalize(b):
            return True
        first = self.resolve(a)
        return first is not None and first is self.resolve(b)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Directory:
        """Parse ``{"approvers": [{"principal", "type", "groups", "tiers", "identities"}]}``."""
        if not isinstance(data, Mapping):
            raise DirectoryError("directory must be a JSON object with an 'approvers' list")
        unknown = sorted(str(k) for k in data if k != "approvers")
        if unknown:
            raise DirectoryError(f"directory: unknown field(s) {', '.join(unknown)}")
        entries = data.get("approvers")
        if not isinstance(entries, list):
            raise DirectoryError("directory: 'approvers' must be a list")
        return cls(tuple(_parse_entry(i, entry) for i, entry in enumerate(entries)))


def _build_index(approvers: Iterable[Approver]) -> dict[str, Approver]:
    index: dict[str, Approver] = {}
    for approver in approvers:
        if not isinstance(approver, Approver):
            raise DirectoryError(f"directory entries must be Approver values, not {type(approver).__name__}")
        for key in sorted(approver.keys):
            other = index.get(key)
            if other is not None:
                raise DirectoryError(
                    f"approvers {other.principal!r} and {approver.principal!r} share the identity {key!r}"
                )
            index[key] = approver
    return index


def _parse_entry(position: int, entry: object) -> Approver:
    where = f"approvers[{position}]"
    if not isinstance(entry, Mapping):
        raise DirectoryError(f"{where}: must be an object, not {type(entry).__name__}")
    missing = sorted(_APPROVER_KEYS - set(entry))
    if missing:
        raise DirectoryError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(str(k) for k in set(entry) - _APPROVER_KEYS)
    if unknown:
        raise DirectoryError(f"{where}: unknown field(s) {', '.join(unknown)}")
    try:
        return Approver(
            principal=_text(f"{where}.principal", entry["principal"]),
            type=_text(f"{where}.type", entry["type"]),
            groups=frozenset(_texts(f"{where}.groups", entry["groups"])),
            tiers=frozenset(_tier(f"{where}.tiers", t) for t in _texts(f"{where}.tiers", entry["tiers"])),
            identities=frozenset(_texts(f"{where}.identities", entry["identities"])),
        )
    except DirectoryError as exc:
        if str(exc).startswith(where):
            raise
        raise DirectoryError(f"{where}: {exc}") from exc


def _text(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise DirectoryError(f"{where}: must be a string, not {type(value).__name__}")
    return value


def _texts(where: str, value: object) -> list[str]:
    # A bare string is iterable too; "groups": "manager" must not become {"m", "a", ...}.
    if not isinstance(value, list):
        raise DirectoryError(f"{where}: must be a list of strings, not {type(value).__name__}")
    return [_text(f"{where}[{i}]", item) for i, item in enumerate(value)]


def _tier(where: str, value: str) -> Tier:
    try:
        return Tier(value)
    except ValueError:
        known = ", ".join(t.value for t in Tier if t is not Tier.LOW)
        raise DirectoryError(f"{where}: unknown tier {value!r} (one of {known})") from None
