"""Which dead letters to re-drive, and where: pure functions over frozen values.

`--filter key=value` (repeatable, all must match) selects letters; a letter
already re-driven (an earlier `dlq_redriven` audit event or this run's ledger)
is skipped unless `--again`. A letter points at its original (topic, partition,
offset, SHA-256: `DeadLetter` v2); `check_original` decides whether what was read
back from those coordinates is that original: gone (retention) or different
bytes, and the letter is refused. A v1 letter carried its original's bytes: they
are its digest, and its fallback when the topic no longer has them. No I/O here:
`redrive.py` reads and sends. See docs/hostile-input.md.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from atb.replay.errors import ReplayUsageError
from contracts import DeadLetter, DeadLetterV1, Topic, topic_name

__all__ = [
    "FILTER_KEYS",
    "AnyLetter",
    "LetterFilter",
    "LetterRef",
    "Original",
    "Redrive",
    "RedriveStatus",
    "check_original",
    "plan_redrive",
    "resolve_topic",
]

AnyLetter = DeadLetter | DeadLetterV1
RedriveStatus = Literal["send", "already_redriven", "original_gone", "digest_mismatch"]
REFUSED: frozenset[str] = frozenset({"original_gone", "digest_mismatch"})

Headers = tuple[tuple[str, bytes], ...]

FILTER_KEYS = ("consumer", "error_code", "original_topic", "request_id")


@dataclass(frozen=True)
class LetterFilter:
    """AND of `key=value` conditions on a DeadLetter."""

    conditions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, texts: Sequence[str]) -> LetterFilter:
        conditions = []
        for text in texts:
            key, sep, value = text.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not value:
                raise ReplayUsageError(f"--filter {text!r}: expected key=value, e.g. consumer=approvals")
            if key not in FILTER_KEYS:
                raise ReplayUsageError(f"--filter {text!r}: unknown key {key!r} (one of {', '.join(FILTER_KEYS)})")
            conditions.append((key, value))
        return cls(tuple(conditions))

    def matches(self, letter: AnyLetter, namespace: str = "") -> bool:
        for key, value in self.conditions:
            actual = getattr(letter, key)
            if key == "original_topic":
                if actual not in (value, namespace + value):
                    return False
            elif actual != value:
                return False
        return True


@dataclass(frozen=True)
class LetterRef:
    """Where a dead letter sits on the DLQ: the idempotency key of its re-drive."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Original:
    """A record as read back from its coordinates (or, for a v1 letter, as the letter carried it)."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass(frozen=True)
class Redrive:
    """What happens to one dead letter that passed the filter.

    `send` letters get their `original` from `check_original` before anything is
    sent; a refused letter (`original_gone`, `digest_mismatch`) says why in `why`.
    """

    ref: LetterRef
    letter: AnyLetter
    target: str
    status: RedriveStatus
    original: Original | None = None
    why: str = ""

    @property
    def refused(self) -> bool:
        return self.status in REFUSED

    @property
    def coordinates(self) -> str:
        letter = self.letter
        return f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}"

    def expected_sha256(self) -> str:
        """The SHA-256 the original must still have: the letter's (v2), or that of the bytes it carried (v1)."""
        if isinstance(self.letter, DeadLetter):
            return self.letter.original_sha256
        return "sha256:" + hashlib.sha256(self.embedded().value or b"").hexdigest()

    def embedded(self) -> Original:
        """The original a v1 letter carried (v2 letters carry only a prefix: ReplayUsageError)."""
        letter = self.letter
        if not isinstance(letter, DeadLetterV1):
            raise ReplayUsageError(f"dead letter {self.ref}: a v2 letter does not carry its original")
        try:
            value = base64.b64decode(letter.original_value_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReplayUsageError(f"dead letter {self.ref}: original value is not base64") from exc
        key = None if letter.original_key is None else letter.original_key.encode()
        return Original(key=key, value=value)


def check_original(redrive: Redrive, found: Original | None) -> Redrive:
    """`redrive` with the original to send, or refused: gone from its topic, or not the bytes the letter names."""
    if redrive.status != "send":
        return redrive
    if found is None:
        if isinstance(redrive.letter, DeadLetterV1):
            return dataclasses.replace(redrive, original=redrive.embedded())
        why = f"original {redrive.coordinates} is no longer on its topic (retention?): nothing to re-drive"
        return dataclasses.replace(redrive, status="original_gone", why=why)
    actual = "sha256:" + hashlib.sha256(found.value or b"").hexdigest()
    expected = redrive.expected_sha256()
    if actual != expected:
        why = f"original {redrive.coordinates} has {actual}, not the letter's {expected}: not re-driven"
        return dataclasses.replace(redrive, status="digest_mismatch", why=why)
    return dataclasses.replace(redrive, original=found)


def resolve_topic(name: str, namespace: str) -> str:
    """`--to`: a catalogue topic, with or without the namespace → its full name; anything else is refused."""
    base = name[len(namespace) :] if namespace and name.startswith(namespace) else name
    try:
        topic = Topic(base)
    except ValueError:
        known = ", ".join(t.value for t in Topic)
        raise ReplayUsageError(f"--to {name!r}: unknown topic (one of {known})") from None
    if topic is Topic.DLQ:
        raise ReplayUsageError("--to: re-driving into the dead-letter topic itself would loop")
    return topic_name(topic, namespace)


def plan_redrive(
    letters: Sequence[tuple[LetterRef, AnyLetter]],
    letter_filter: LetterFilter,
    *,
    namespace: str,
    target: str | None,
    done: Collection[str],
    again: bool,
) -> list[Redrive]:
    """The re-drives of the letters that pass the filter; `done` holds refs (str) already re-driven."""
    planned = []
    for ref, letter in letters:
        if not letter_filter.matches(letter, namespace):
            continue
        status: RedriveStatus = "already_redriven" if str(ref) in done and not again else "send"
        planned.append(Redrive(ref, letter, target or letter.original_topic, status))
    return planned
