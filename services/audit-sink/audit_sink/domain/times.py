"""Times in the audit store: UTC, and one fixed spelling of them.

Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "parse_time", "render_time"]


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive value (SQLite keeps no offset) is UTC already.

    A saturated `datetime.max` that would overflow when shifted keeps its wall time.
    """
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return moment.replace(tzinfo=UTC)


def render_time(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ`: fixed width, UTC."""
    return as_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """A time as `render_time` or the leaf writes it (RFC 3339, UTC, `Z`)."""
    return as_utc(datetime.fromisoformat(text))
