"""Value coercions shared by operators and actions: numbers, dates, times of day."""

from __future__ import annotations

from datetime import UTC, datetime, time, tzinfo
from typing import Any

from eventray.pipeline.paths import MISSING

__all__ = ["as_datetime", "as_number", "as_time_of_day", "iso"]

_EPOCH_MS_THRESHOLD = 100_000_000_000  # numbers above this are epoch milliseconds


def as_number(value: Any) -> float | None:
    """A number from an int/float or a numeric string; None for anything else (bools too)."""
    if isinstance(value, bool) or value is None or value is MISSING:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def as_datetime(value: Any, tz: tzinfo = UTC) -> datetime | None:
    """A timezone-aware datetime from ISO-8601 text, epoch seconds/ms, or a datetime.

    Text without an offset is read in ``tz`` (the business rule's timezone). Empty text and
    anything unparseable give None.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) >= _EPOCH_MS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):
            return None  # e.g. epoch microseconds: out of range, not a date we can compare
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    return None


def as_time_of_day(value: Any, tz: tzinfo) -> time | None:
    """``HH:MM[:SS]`` text as a time, or the time of day of a date value in ``tz``."""
    if isinstance(value, str) and len(value) <= 8 and ":" in value:
        try:
            return time.fromisoformat(value)
        except ValueError:
            return None
    moment = as_datetime(value, tz)
    if moment is None:
        return None
    return moment.astimezone(tz).timetz().replace(tzinfo=None)


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a Z, as stored for ``now`` values."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
