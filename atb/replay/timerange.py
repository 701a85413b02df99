"""`--since` / `--until`: ISO-8601 instants or relative times (`90s`, `30m`, `2h`, `7d`, `1w`, `now`).

Pure: parsing and checking only; `now` is passed in, so tests need no clock.
A naive ISO time (no offset) is read as UTC: logs and Kafka timestamps are UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from atb.replay.errors import ReplayUsageError

__all__ = ["TimeRange", "parse_instant"]

_RELATIVE = re.compile(r"^(\d{1,9})\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(text: str, now: datetime, *, option: str = "--since") -> datetime:
    """An aware datetime for `text`, or ReplayUsageError naming the option."""
    raw = text.strip()
    if raw == "now":
        return now
    if match := _RELATIVE.fullmatch(raw):
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ReplayUsageError(f"{option} {text!r}: not an ISO-8601 time or a relative time like 30m, 2h, 7d") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TimeRange:
    """A half-open range [since, until) of record timestamps; None = unbounded on that side."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ReplayUsageError(f"--since {self.since.isoformat()} is not before --until {self.until.isoformat()}")

    @classmethod
    def parse(cls, since: str | None, until: str | None, now: datetime) -> TimeRange:
        return cls(
            parse_instant(since, now, option="--since") if since else None,
            parse_instant(until, now, option="--until") if until else None,
        )

    @property
    def since_ms(self) -> int | None:
        return None if self.since is None else int(self.since.timestamp() * 1000)

    @property
    def until_ms(self) -> int | None:
        return None if self.until is None else int(self.until.timestamp() * 1000)

    def describe(self) -> str:
        start = self.since.isoformat() if self.since else "the beginning"
        end = self.until.isoformat() if self.until else "the end offsets at start"
        return f"{start} → {end}"
