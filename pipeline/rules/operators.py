"""The condition operators of CONTRACTS.md. Each takes (left, right, env) and returns a bool.

A missing left value (:data:`pipeline.paths.MISSING`) fails every operator except
``notExists``; ``olderThanSeconds`` treats an empty or unset date as infinitely old, so a
cooldown whose ``lastAlertAt`` was never set lets the first alert through.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, Protocol

from eventray.pipeline.errors import RuleError
from eventray.pipeline.models.rule import OPERATORS
from eventray.pipeline.paths import MISSING
from eventray.pipeline.patterns import Pattern, PatternError, cached_pattern
from eventray.pipeline.rules.values import as_datetime, as_number, as_time_of_day

__all__ = ["OPERATOR_FUNCTIONS", "Env", "OperatorFn", "loose_equal", "pattern"]


class Env(Protocol):
    """What operators need from the evaluation: the time and the timezone."""

    now: datetime
    tz: tzinfo


OperatorFn = Callable[[Any, Any, Env], bool]


def loose_equal(left: Any, right: Any) -> bool:
    """Equality that tolerates what JSON and forms produce: 1 == 1.0 == "1", true == "true"."""
    if left is MISSING or right is MISSING:
        return False
    if isinstance(left, bool) or isinstance(right, bool):
        if isinstance(left, bool) and isinstance(right, bool):
            return left is right
        other, flag = (right, left) if isinstance(left, bool) else (left, right)
        return isinstance(other, str) and other.lower() == ("true" if flag else "false")
    if type(left) is type(right) or (
        isinstance(left, (int, float)) and isinstance(right, (int, float))
    ):
        return bool(left == right)
    a, b = as_number(left), as_number(right)
    return a is not None and b is not None and a == b


def _numeric(test: Callable[[float, float], bool]) -> OperatorFn:
    def op(left: Any, right: Any, env: Env) -> bool:
        a, b = as_number(left), as_number(right)
        return a is not None and b is not None and test(a, b)

    return op


def _pair(value: Any) -> tuple[Any, Any] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    return None


def _between(left: Any, right: Any, env: Env) -> bool:
    pair, value = _pair(right), as_number(left)
    if pair is None or value is None:
        return False
    low, high = as_number(pair[0]), as_number(pair[1])
    return low is not None and high is not None and low <= value <= high


def _in(left: Any, right: Any, env: Env) -> bool:
    return isinstance(right, (list, tuple)) and any(loose_equal(left, item) for item in right)


def _contains(left: Any, right: Any, env: Env) -> bool:
    if isinstance(left, str):
        return isinstance(right, str) and right in left
    if isinstance(left, (list, tuple)):
        return any(loose_equal(item, right) for item in left)
    if isinstance(left, dict):
        return isinstance(right, str) and right in left
    return False


def pattern(source: str) -> Pattern:
    """The compiled RE2 pattern (:mod:`pipeline.patterns`: linear time), cached; raises
    RuleError if RE2 refuses it. Patterns written in a rule or given as a parameter were
    checked at load; one read from an event or a state variable is checked here."""
    try:
        return cached_pattern(source)
    except PatternError as exc:
        raise RuleError(f"invalid regex {source!r}: {exc}") from exc


def _regex(left: Any, right: Any, env: Env) -> bool:
    if not isinstance(right, str) or not isinstance(left, (str, int, float)):
        return False  # missing, null, objects and lists never match
    return pattern(right).search(str(left))


def _dates(test: Callable[[datetime, datetime], bool]) -> OperatorFn:
    def op(left: Any, right: Any, env: Env) -> bool:
        a, b = as_datetime(left, env.tz), as_datetime(right, env.tz)
        return a is not None and b is not None and test(a, b)

    return op


def _between_date(left: Any, right: Any, env: Env) -> bool:
    pair, value = _pair(right), as_datetime(left, env.tz)
    if pair is None or value is None:
        return False
    low, high = as_datetime(pair[0], env.tz), as_datetime(pair[1], env.tz)
    return low is not None and high is not None and low <= value <= high


def _times(test: Callable[[Any, Any], bool]) -> OperatorFn:
    def op(left: Any, right: Any, env: Env) -> bool:
        a, b = as_time_of_day(left, env.tz), as_time_of_day(right, env.tz)
        return a is not None and b is not None and test(a, b)

    return op


def _between_time(left: Any, right: Any, env: Env) -> bool:
    """Inclusive; a window whose start is after its end wraps midnight (22:00-06:00)."""
    pair, value = _pair(right), as_time_of_day(left, env.tz)
    if pair is None or value is None:
        return False
    low, high = as_time_of_day(pair[0], env.tz), as_time_of_day(pair[1], env.tz)
    if low is None or high is None:
        return False
    return low <= value <= high if low <= high else (value >= low or value <= high)


def _age(older: bool) -> OperatorFn:
    def op(left: Any, right: Any, env: Env) -> bool:
        seconds = as_number(right)
        if seconds is None:
            return False
        moment = as_datetime(left, env.tz)
        if moment is None:  # never happened: infinitely old
            return older and (left is None or left == "" or left is MISSING)
        age = (env.now - moment).total_seconds()
        return age > seconds if older else age < seconds

    return op


def _not_exists(left: Any, right: Any, env: Env) -> bool:
    return left is MISSING or left is None


OPERATOR_FUNCTIONS: dict[str, OperatorFn] = {
    "equals": lambda a, b, e: loose_equal(a, b),
    "notEquals": lambda a, b, e: a is not MISSING and not loose_equal(a, b),
    "greaterThan": _numeric(lambda a, b: a > b),
    "greaterThanEquals": _numeric(lambda a, b: a >= b),
    "lessThan": _numeric(lambda a, b: a < b),
    "lessThanEquals": _numeric(lambda a, b: a <= b),
    "between": _between,
    "in": lambda a, b, e: a is not MISSING and _in(a, b, e),
    "notIn": lambda a, b, e: a is not MISSING and not _in(a, b, e),
    "exists": lambda a, b, e: not _not_exists(a, b, e),
    "notExists": _not_exists,
    "contains": _contains,
    "notContains": lambda a, b, e: a is not MISSING and a is not None and not _contains(a, b, e),
    "startsWith": lambda a, b, e: isinstance(a, str) and isinstance(b, str) and a.startswith(b),
    "endsWith": lambda a, b, e: isinstance(a, str) and isinstance(b, str) and a.endswith(b),
    "regex": _regex,
    "beforeDate": _dates(lambda a, b: a < b),
    "afterDate": _dates(lambda a, b: a > b),
    "betweenDate": _between_date,
    "beforeTime": _times(lambda a, b: a < b),
    "afterTime": _times(lambda a, b: a > b),
    "betweenTime": _between_time,
    "olderThanSeconds": _age(older=True),
    "newerThanSeconds": _age(older=False),
}

assert set(OPERATOR_FUNCTIONS) == set(OPERATORS), "every contract operator has an implementation"
