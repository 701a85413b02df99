"""How long each event is kept (docs/architecture.md §2.8): audit events 7 years, access logs 90 days.

`retain_until` is fixed when a row is written; `atb audit purge` may only
remove rows past it (and not under legal hold). Per-event-type overrides are configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import MAXYEAR, datetime, timedelta

__all__ = ["ACCESS_LOG_DAYS", "DEFAULT_YEARS", "RetentionPolicy", "add_years"]

DEFAULT_YEARS = 7
"""SOX §802 / Reg S-X 2-06: seven years."""

ACCESS_LOG_DAYS = 90
"""docs/architecture.md §2.8 (Audit retention): access logs are kept 90 days."""


def add_years(moment: datetime, years: int) -> datetime:
    """Same calendar day `years` later; 29 February becomes 28 February; saturates at year 9999."""
    if moment.year + years > MAXYEAR:
        return datetime.max.replace(tzinfo=moment.tzinfo)
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


@dataclass(frozen=True)
class RetentionPolicy:
    default_years: int = DEFAULT_YEARS
    days_by_event_type: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_years < 1:
            raise ValueError("audit events are kept at least one year")
        for event_type, days in self.days_by_event_type.items():
            if days < 1:
                raise ValueError(f"retention of {event_type} must be at least one day")

    def retain_until(self, event_type: str, occurred_at: datetime) -> datetime:
        days = self.days_by_event_type.get(event_type)
        if days is not None:
            try:
                return occurred_at + timedelta(days=days)
            except OverflowError:
                return datetime.max.replace(tzinfo=occurred_at.tzinfo)
        return add_years(occurred_at, self.default_years)
