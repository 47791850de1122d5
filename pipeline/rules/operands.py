"""What each operator can take as the value it compares with, checked wherever that value is
known before any event: a rule's literal when the rule is loaded, a business rule's parameter
when the business rule is compiled, a route group's match value when the route group is
loaded.

A value an operator cannot use is refused there, with the reason, instead of being accepted
and then either raising for every event (a pattern RE2 does not take) or never matching (a
``between`` given one number, an ``in`` given a text, a date that does not parse). What the
checks accept is exactly what the operators in :mod:`operators` and :mod:`pipeline.routing`
can compare with.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

from eventray.pipeline.patterns import PatternError, compile_pattern
from eventray.pipeline.rules.values import as_datetime, as_number, as_time_of_day

__all__ = [
    "LIST_OPERATORS",
    "NOW",
    "PAIR_OPERATORS",
    "UNKNOWN",
    "match_value_problem",
    "operand_problem",
    "pattern_problem",
    "right_problem",
]

NUMBER_OPERATORS = frozenset(
    {"greaterThan", "greaterThanEquals", "lessThan", "lessThanEquals", "olderThanSeconds",
     "newerThanSeconds"}
)  # fmt: skip
DATE_OPERATORS = frozenset({"beforeDate", "afterDate"})
TIME_OPERATORS = frozenset({"beforeTime", "afterTime"})
PAIR_OPERATORS = {"between": "number", "betweenDate": "date", "betweenTime": "time"}
"""Operators comparing with a (low, high) pair, and what each bound must be."""
LIST_OPERATORS = frozenset({"in", "notIn"})
TEXT_OPERATORS = frozenset({"startsWith", "endsWith"})
SCALAR_OPERATORS = NUMBER_OPERATORS | DATE_OPERATORS | TIME_OPERATORS | TEXT_OPERATORS | {"regex"}
"""Operators that can never use a list: given one, they are false for every event."""


class _Now(datetime):
    """``{type: now}``: a date, shown as ``now`` in reasons."""

    def __repr__(self) -> str:
        return "now"


NOW = _Now(2000, 1, 1, tzinfo=UTC)
"""Stands for a ``now`` operand: any date will do to check what an operator takes."""
UNKNOWN: Any = object()
"""Stands for an operand known only per event (an event field, a state variable)."""

_KINDS = {
    "number": "a finite number",
    "date": "a date (ISO-8601 text such as '2026-01-31T08:00:00Z', or epoch seconds or ms)",
    "time": "a time of day ('HH:MM' or 'HH:MM:SS' text, quoted in YAML)",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _finite(value: Any) -> bool:
    """Whether ``value`` is a number the operators can compare with (an integer too large for
    a float would raise in every comparison; NaN and infinities compare as nothing useful)."""
    try:
        number = as_number(value)
    except (OverflowError, ValueError):
        return False
    return number is not None and math.isfinite(number)


def _kind_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not of ``kind`` (number, date, time), or None."""
    if kind == "number":
        ok = _finite(value)
    elif kind == "date":
        ok = as_datetime(value, UTC) is not None
    else:  # a number would be read as an epoch date, which is no time of day anyone means
        ok = not isinstance(value, (int, float)) and as_time_of_day(value, UTC) is not None
    if ok:
        return None
    hint = ""
    if isinstance(value, date) and not isinstance(value, datetime):
        hint = " (YAML read an unquoted date: quote it, or write a full timestamp)"
    elif kind == "time" and isinstance(value, int) and not isinstance(value, bool):
        hint = " (YAML reads an unquoted 22:00 as the number 1320: quote times)"
    return f"needs {_KINDS[kind]}, got {_shown(value)}{hint}"


def operand_problem(operator: str, value: Any) -> str | None:
    """Why ``value`` can never work as ``operator``'s right-hand value, or None if it can.

    ``value`` is the value itself (a literal, a parameter's value, or a ``datetime`` standing
    for ``now``). Operators not listed here (equals, contains, exists...) take any value.
    """
    if operator in PAIR_OPERATORS:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return f"needs two values (low, high), got {_shown(value)}"
        kind = PAIR_OPERATORS[operator]
        for bound, item in zip(("low", "high"), value, strict=True):
            problem = _kind_problem(kind, item)
            if problem is not None:
                return f"the {bound} value {problem}"
        return None
    if operator in NUMBER_OPERATORS:
        return _kind_problem("number", value)
    if operator in DATE_OPERATORS:
        return _kind_problem("date", value)
    if operator in TIME_OPERATORS:
        return _kind_problem("time", value)
    if operator in LIST_OPERATORS:
        if isinstance(value, (list, tuple)):
            return None
        return f"needs a list value, got {_shown(value)}"
    if operator in TEXT_OPERATORS:
        return None if isinstance(value, str) else f"needs text, got {_shown(value)}"
    if operator == "regex":
        return pattern_problem(value)
    return None


def pattern_problem(value: Any) -> str | None:
    """Why ``value`` is not a pattern RE2 takes, or None."""
    if not isinstance(value, str):
        return f"needs a string pattern, got {_shown(value)}"
    try:
        compile_pattern(value)
    except PatternError as exc:
        return f"invalid pattern {_shown(value)}: {exc}"
    return None


def right_problem(operator: str, operand: Any, *, listed: bool = False) -> str | None:
    """:func:`operand_problem` for a condition's right-hand side as written.

    ``operand`` is its value, :data:`NOW` for ``now`` or :data:`UNKNOWN` when only an event
    tells it; with ``listed`` it is the two values of a written list ``[low, high]``, each of
    them a value, :data:`NOW` or :data:`UNKNOWN`.
    """
    if listed:
        if operator in PAIR_OPERATORS:
            kind = PAIR_OPERATORS[operator]
            for bound, item in zip(("low", "high"), operand, strict=True):
                problem = None if item is UNKNOWN else _kind_problem(kind, item)
                if problem is not None:
                    return f"the {bound} value {problem}"
            return None
        if operator in SCALAR_OPERATORS:
            return (
                "takes one value, not a list (lists are for between, betweenDate, "
                "betweenTime, in and notIn)"
            )
        return None
    if operand is UNKNOWN:
        return None
    return operand_problem(operator, operand)


def match_value_problem(operator: str, value: Any) -> str | None:
    """The same for a route group's match rule (``eq neq gt gte lt lte in nin exists regex``)."""
    if operator in ("in", "nin"):
        return None if isinstance(value, list) else f"needs a list value, got {_shown(value)}"
    if operator in ("gt", "gte", "lt", "lte"):
        if _finite(value) or (isinstance(value, str) and as_number(value) is None):
            return None  # a number, or a text compared as text
        return f"needs a finite number or a text, got {_shown(value)}"
    if operator == "exists":
        if value is None or isinstance(value, bool):
            return None
        return f"takes true, false or nothing, got {_shown(value)}"
    if operator == "regex":
        return pattern_problem(value)
    return None
