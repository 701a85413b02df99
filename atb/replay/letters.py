"""Which dead letters to re-drive, and where: pure functions over frozen values.

`--filter key=value` (repeatable, all must match) selects letters; a letter
already re-driven (an earlier `dlq_redriven` audit event or this run's ledger)
is skipped unless `--again`. No I/O here: `redrive.py` reads and sends.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from atb.replay.errors import ReplayUsageError
from contracts import DeadLetter, Topic, topic_name

__all__ = ["FILTER_KEYS", "LetterFilter", "LetterRef", "Redrive", "plan_redrive", "resolve_topic"]

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

    def matches(self, letter: DeadLetter, namespace: str = "") -> bool:
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
class Redrive:
    """What happens to one dead letter that passed the filter."""

    ref: LetterRef
    letter: DeadLetter
    target: str
    status: Literal["send", "already_redriven"]

    @property
    def key(self) -> bytes | None:
        return None if self.letter.original_key is None else self.letter.original_key.encode()

    @property
    def value(self) -> bytes:
        try:
            return base64.b64decode(self.letter.original_value_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReplayUsageError(f"dead letter {self.ref}: original value is not base64") from exc


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
    letters: Sequence[tuple[LetterRef, DeadLetter]],
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
        status: Literal["send", "already_redriven"] = "already_redriven" if str(ref) in done and not again else "send"
        planned.append(Redrive(ref, letter, target or letter.original_topic, status))
    return planned
