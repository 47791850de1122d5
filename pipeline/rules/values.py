"""Value coercions shared by operators and actions: numbers, dates, times of day.

Dates and times arrive as text, and mostly the same text again and again (a state variable
such as ``lastAlertAt``, an event's ``created``, a rule's bounds), so parsed text is memoised
per (text, timezone): the results are immutable and depend on nothing else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, time, tzinfo
from typing import Any, TypeVar

from eventray.pipeline.paths import MISSING

__all__ = ["as_datetime", "as_number", "as_time_of_day", "iso", "traceable"]

_EPOCH_MS_THRESHOLD = 100_000_000_000  # numbers above this are epoch milliseconds
_MEMO_LIMIT = 4096  # distinct (text, timezone) per memo before it starts over
_MEMO_TEXT = 64  # longer text is no date worth keeping (and must not pin megabytes)

R = TypeVar("R")
_Memo = dict[tuple[str, int], tuple[tzinfo, Any]]


def _memoised(memo: _Memo) -> Callable[[Callable[[Any, tzinfo], R]], Callable[[Any, tzinfo], R]]:
    """A parse function with its results for plain text kept in ``memo``, per (text, zone).

    Keyed by the zone's identity, not equality: zones equal by offset can differ in name,
    which a result carries. An entry holds its zone, so the id stays that zone's while the
    entry lives; the ``is`` check on reading is belt and braces.
    """

    def decorate(parse: Callable[[Any, tzinfo], R]) -> Callable[[Any, tzinfo], R]:
        @functools.wraps(parse)
        def lookup(value: Any, tz: tzinfo) -> R:
            if type(value) is not str or len(value) > _MEMO_TEXT:
                return parse(value, tz)
            key = (value, id(tz))
            entry = memo.get(key)
            if entry is not None and entry[0] is tz:
                result: R = entry[1]
                return result
            result = parse(value, tz)
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[key] = (tz, result)
            return result

        return lookup

    return decorate


_DATES: _Memo = {}
_TIMES: _Memo = {}


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
    if isinstance(value, str):  # the common case first: a str is none of the types below
        return _from_text(value, tz) if value else None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:  # an integer too large for a float overflows already in the division
            seconds = value / 1000 if abs(value) >= _EPOCH_MS_THRESHOLD else value
            return datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):
            return None  # e.g. epoch microseconds: out of range, not a date we can compare
    return None


@_memoised(_DATES)
def _from_text(value: str, tz: tzinfo) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def as_time_of_day(value: Any, tz: tzinfo) -> time | None:
    """``HH:MM[:SS]`` text as a time, or the time of day of a date value in ``tz``."""
    if isinstance(value, str) and len(value) <= 8 and ":" in value:
        try:
            return time.fromisoformat(value)  # cheaper than a memo lookup
        except ValueError:
            return None
    return _time_of_date(value, tz)


@_memoised(_TIMES)
def _time_of_date(value: Any, tz: tzinfo) -> time | None:
    moment = as_datetime(value, tz)
    if moment is None:
        return None
    return moment.astimezone(tz).timetz().replace(tzinfo=None)


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a Z, as stored for ``now`` values."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def traceable(value: Any) -> Any:
    """A value as an evaluation trace shows it: dates as :func:`iso` text, missing as None."""
    if value is MISSING:
        return None
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, list):
        return [traceable(v) for v in value]
    return value
