"""Condition operators (pipeline/rules/operators.py) and value coercions (values.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from eventray.pipeline.errors import RuleError
from eventray.pipeline.models.rule import OPERATORS
from eventray.pipeline.paths import MISSING
from eventray.pipeline.rules import values
from eventray.pipeline.rules.operators import OPERATOR_FUNCTIONS, loose_equal
from eventray.pipeline.rules.values import as_datetime, as_number, as_time_of_day, iso

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
EPOCH_2026 = 1_767_225_600  # 2026-01-01T00:00:00Z in seconds


@dataclass
class Env:
    now: datetime = NOW
    tz: tzinfo = field(default=UTC)


UTC_ENV = Env()
BERLIN_ENV = Env(tz=BERLIN)


def op(name: str, left: Any, right: Any, env: Env = UTC_ENV) -> bool:
    return OPERATOR_FUNCTIONS[name](left, right, env)


# One true and one false case for every operator (UTC env unless the row says otherwise).
CASES: list[tuple[str, Any, Any, bool]] = [
    ("equals", "critical", "critical", True),
    ("equals", "critical", "ok", False),
    ("notEquals", "critical", "ok", True),
    ("notEquals", 1, "1", False),
    ("greaterThan", 5, 4.5, True),
    ("greaterThan", 5, 5, False),
    ("greaterThanEquals", 5, 5, True),
    ("greaterThanEquals", "4.9", 5, False),
    ("lessThan", "3", 10, True),  # numeric strings compare as numbers, not text
    ("lessThan", 10, 3, False),
    ("lessThanEquals", 3, 3.0, True),
    ("lessThanEquals", 3.1, 3, False),
    ("between", 15, [10, 20], True),
    ("between", 25, [10, 20], False),
    ("in", "b", ["a", "b"], True),
    ("in", "c", ["a", "b"], False),
    ("notIn", "c", ["a", "b"], True),
    ("notIn", 2, [1, "2"], False),
    ("exists", 0, None, True),
    ("exists", None, None, False),
    ("notExists", None, None, True),
    ("notExists", "", None, False),
    ("contains", "freezer-07", "zer", True),
    ("contains", "freezer-07", "fridge", False),
    ("notContains", "freezer-07", "fridge", True),
    ("notContains", ["a", "b"], "b", False),
    ("startsWith", "freezer-07", "free", True),
    ("startsWith", "freezer-07", "07", False),
    ("endsWith", "freezer-07", "-07", True),
    ("endsWith", "freezer-07", "free", False),
    ("regex", "freezer-07", r"^freezer-\d+$", True),
    ("regex", "fridge-07", r"^freezer", False),
    ("beforeDate", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", True),
    ("beforeDate", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", False),
    ("afterDate", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", True),
    ("afterDate", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", False),
    ("betweenDate", "2026-01-15", ["2026-01-01", "2026-01-31"], True),
    ("betweenDate", "2026-02-15", ["2026-01-01", "2026-01-31"], False),
    ("beforeTime", "05:59", "06:00", True),
    ("beforeTime", "06:00", "06:00", False),
    ("afterTime", "22:00:01", "22:00", True),
    ("afterTime", "21:59", "22:00", False),
    ("betweenTime", "12:00", ["08:00", "17:00"], True),
    ("betweenTime", "18:00", ["08:00", "17:00"], False),
    ("olderThanSeconds", iso(NOW - timedelta(seconds=601)), 600, True),
    ("olderThanSeconds", iso(NOW - timedelta(seconds=599)), 600, False),
    ("newerThanSeconds", iso(NOW - timedelta(seconds=599)), 600, True),
    ("newerThanSeconds", iso(NOW - timedelta(seconds=601)), 600, False),
]


def test_cases_cover_every_operator_both_ways() -> None:
    covered = {(name, expected) for name, _, _, expected in CASES}
    assert set(OPERATOR_FUNCTIONS) == set(OPERATORS)
    assert covered == {(name, flag) for name in OPERATOR_FUNCTIONS for flag in (True, False)}


@pytest.mark.parametrize(("name", "left", "right", "expected"), CASES)
def test_operator_table(name: str, left: Any, right: Any, expected: bool) -> None:
    assert op(name, left, right) is expected


# --------------------------------------------------------------------------- MISSING


def _right_for(name: str) -> Any:
    """A right operand that would make the operator true for almost any present left value."""
    pairs = {
        "between": [-1e9, 1e9],
        "betweenDate": ["1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z"],
        "betweenTime": ["00:00", "23:59:59"],
        "in": ["MISSING", None, ""],
        "notIn": ["x"],
        "contains": "",
        "startsWith": "",
        "endsWith": "",
        "regex": "^MISS",
        "beforeDate": "2999-01-01T00:00:00Z",
        "afterDate": "1970-01-01T00:00:00Z",
        "beforeTime": "23:59:59",
        "afterTime": "00:00",
        "greaterThan": -1e9,
        "greaterThanEquals": -1e9,
        "lessThan": 1e9,
        "lessThanEquals": 1e9,
        "newerThanSeconds": 1e12,
        "notEquals": "x",
        "notContains": "x",
    }
    return pairs.get(name)


# regex and olderThanSeconds have their own tests below.
@pytest.mark.parametrize(
    "name", sorted(set(OPERATOR_FUNCTIONS) - {"notExists", "regex", "olderThanSeconds"})
)
def test_missing_left_fails_every_operator(name: str) -> None:
    assert op(name, MISSING, _right_for(name)) is False


def test_missing_left_satisfies_not_exists() -> None:
    assert op("notExists", MISSING, None) is True
    assert op("exists", MISSING, None) is False


def test_missing_left_fails_regex_that_does_not_match_the_word_missing() -> None:
    assert op("regex", MISSING, r"^\d+$") is False


@pytest.mark.parametrize("pattern", [".*", "^MISS"])
def test_missing_left_fails_regex(pattern: str) -> None:
    assert op("regex", MISSING, pattern) is False


def test_older_than_seconds_treats_missing_as_never_happened() -> None:
    # Documented in operators.py ("an empty or unset date is infinitely old"); the one
    # operator besides notExists that a MISSING left value can satisfy.
    assert op("olderThanSeconds", MISSING, 600) is True
    assert op("newerThanSeconds", MISSING, 600) is False


# --------------------------------------------------------------------------- equality


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (1, 1.0, True),
        (1, "1", True),
        ("1", 1.0, True),
        (1.0, "1", True),
        ("1.0", 1, True),
        (True, "true", True),
        ("TRUE", True, True),
        (False, "false", True),
        (True, True, True),
        (None, None, True),
        (True, 1, False),  # a bool is not a number
        (False, 0, False),
        (True, "yes", False),
        (False, "true", False),
        ("1.0", "1", False),  # two strings compare as text
        (1, "one", False),
        (None, "", False),
        (None, 0, False),
        (MISSING, MISSING, False),
    ],
)
def test_loose_equal(left: Any, right: Any, expected: bool) -> None:
    assert loose_equal(left, right) is expected
    assert loose_equal(right, left) is expected
    assert op("equals", left, right) is expected


def test_in_and_not_in_use_loose_equality() -> None:
    assert op("in", "2", [1, 2.0]) is True
    assert op("in", True, ["true"]) is True
    assert op("notIn", "2", [1, 2.0]) is False
    assert op("in", "a", "abc") is False  # the right side must be a list
    assert op("notIn", None, ["x"]) is True


def test_contains_on_lists_dicts_and_other_values() -> None:
    assert op("contains", [1, 2, 3], "2") is True
    assert op("contains", {"door": 1}, "door") is True
    assert op("contains", {"door": 1}, "window") is False
    assert op("contains", 12345, "3") is False
    assert op("notContains", None, "x") is False


# --------------------------------------------------------------------------- between


@pytest.mark.parametrize(
    ("left", "pair", "expected"),
    [
        (10, [10, 20], True),  # inclusive low
        (20, [10, 20], True),  # inclusive high
        ("15", ["10", "20"], True),
        (9.99, [10, 20], False),
        (15, [20, 10], False),  # not reordered
        (15, [10], False),
        (15, [10, 20, 30], False),
        (15, 10, False),
        ("x", [10, 20], False),
        (15, [10, "high"], False),
    ],
)
def test_between_takes_a_low_high_pair(left: Any, pair: Any, expected: bool) -> None:
    assert op("between", left, pair) is expected


def test_numeric_operators_refuse_bools_and_text() -> None:
    assert op("greaterThan", True, 0) is False
    assert op("lessThan", "abc", 10) is False
    assert op("greaterThanEquals", 5, None) is False


# --------------------------------------------------------------------------- dates


def test_dates_as_iso_epoch_seconds_and_epoch_ms_agree() -> None:
    for value in ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00", EPOCH_2026,
                  EPOCH_2026 * 1000, float(EPOCH_2026)):  # fmt: skip
        assert as_datetime(value) == datetime(2026, 1, 1, tzinfo=UTC), value
        assert op("betweenDate", value, [EPOCH_2026 * 1000, "2026-01-01T00:00:00Z"]) is True
    assert op("afterDate", EPOCH_2026 + 1, "2026-01-01T00:00:00Z") is True
    assert op("beforeDate", EPOCH_2026 * 1000 - 1, EPOCH_2026) is True
    assert op("afterDate", EPOCH_2026 * 1000, EPOCH_2026) is False


def test_naive_iso_is_read_in_the_business_rule_timezone() -> None:
    naive = "2026-06-01T10:00:00"  # Berlin summer time: 08:00Z
    assert as_datetime(naive, BERLIN) == datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    assert as_datetime(naive) == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert op("beforeDate", naive, "2026-06-01T09:00:00Z", BERLIN_ENV) is True
    assert op("beforeDate", naive, "2026-06-01T09:00:00Z", UTC_ENV) is False
    # an explicit offset is not re-read
    assert op("beforeDate", "2026-06-01T10:00:00Z", "2026-06-01T09:00:00Z", BERLIN_ENV) is False


def test_unparseable_dates_are_false_not_errors() -> None:
    assert as_datetime("") is None
    assert as_datetime("yesterday") is None
    assert as_datetime(True) is None
    assert as_datetime(None) is None
    assert op("afterDate", "yesterday", "2026-01-01T00:00:00Z") is False
    assert op("betweenDate", "2026-01-15", ["2026-01-01"]) is False


@pytest.mark.parametrize("value", [EPOCH_2026 * 1_000_000, 1e20])
def test_out_of_range_epoch_numbers_are_unparseable(value: float) -> None:
    assert as_datetime(value) is None
    assert op("afterDate", value, "2026-01-01T00:00:00Z") is False


def test_as_number() -> None:
    assert as_number("80.5") == 80.5
    assert as_number(3) == 3.0
    assert as_number(True) is None
    assert as_number("") is None
    assert as_number(MISSING) is None
    assert as_number([1]) is None


def test_iso_is_utc_with_milliseconds() -> None:
    moment = datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=BERLIN)
    assert iso(moment) == "2026-06-01T08:00:00.123Z"


# --------------------------------------------------------------------------- times of day


def test_time_of_day_of_a_date_is_taken_in_the_timezone() -> None:
    assert as_time_of_day("07:30", BERLIN) == time(7, 30)
    assert as_time_of_day("2026-01-15T21:30:00Z", BERLIN) == time(22, 30)  # CET = UTC+1
    assert as_time_of_day("2026-07-15T21:30:00Z", BERLIN) == time(23, 30)  # CEST = UTC+2
    assert as_time_of_day(EPOCH_2026, BERLIN) == time(1, 0)
    assert as_time_of_day("25:00", BERLIN) is None
    assert as_time_of_day("", BERLIN) is None


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        ("22:00", True),  # inclusive start
        ("23:59", True),
        ("00:00", True),
        ("06:00", True),  # inclusive end
        ("06:01", False),
        ("12:00", False),
        ("21:59:59", False),
    ],
)
def test_between_time_window_wrapping_midnight(left: str, expected: bool) -> None:
    assert op("betweenTime", left, ["22:00", "06:00"], BERLIN_ENV) is expected


def test_time_operators_read_dates_in_the_rule_timezone() -> None:
    late_utc = "2026-01-15T21:30:00Z"  # 22:30 in Berlin, 21:30 in UTC
    assert op("betweenTime", late_utc, ["22:00", "06:00"], BERLIN_ENV) is True
    assert op("betweenTime", late_utc, ["22:00", "06:00"], UTC_ENV) is False
    early_utc = "2026-07-15T03:30:00Z"  # 05:30 in Berlin (summer), 03:30 in UTC
    assert op("afterTime", early_utc, "05:00", BERLIN_ENV) is True
    assert op("afterTime", early_utc, "05:00", UTC_ENV) is False
    assert op("beforeTime", early_utc, "04:00", BERLIN_ENV) is False
    assert op("beforeTime", early_utc, "04:00", UTC_ENV) is True
    naive = "2026-01-15T23:00:00"  # read in the rule's timezone: 23:00 there
    assert op("betweenTime", naive, ["22:00", "23:30"], BERLIN_ENV) is True


def test_between_time_needs_a_pair_of_times() -> None:
    assert op("betweenTime", "12:00", "08:00") is False
    assert op("betweenTime", "12:00", ["08:00", "noon"]) is False


# --------------------------------------------------------------------------- ages


def test_age_operators_are_relative_to_env_now() -> None:
    ten_minutes_ago = NOW - timedelta(minutes=10)
    assert op("olderThanSeconds", iso(ten_minutes_ago), 599) is True
    assert op("olderThanSeconds", iso(ten_minutes_ago), "601") is False
    assert op("newerThanSeconds", ten_minutes_ago, 601) is True
    later = Env(now=NOW + timedelta(hours=1))
    assert op("newerThanSeconds", ten_minutes_ago, 601, later) is False
    assert op("olderThanSeconds", ten_minutes_ago, 601, later) is True
    # epoch ms works too
    ms = int(ten_minutes_ago.timestamp() * 1000)
    assert op("olderThanSeconds", ms, 599) is True
    assert op("newerThanSeconds", ms, 599) is False


def test_empty_date_is_infinitely_old() -> None:
    assert op("olderThanSeconds", "", 600) is True
    assert op("newerThanSeconds", "", 600) is False
    assert op("olderThanSeconds", None, 600) is True
    assert op("newerThanSeconds", None, 600) is False


def test_age_operators_refuse_garbage() -> None:
    assert op("olderThanSeconds", "not a date", 600) is False
    assert op("newerThanSeconds", "not a date", 600) is False
    assert op("olderThanSeconds", "", "soon") is False


def test_invalid_regex_is_a_rule_error() -> None:
    with pytest.raises(RuleError, match="invalid regex"):
        op("regex", "abc", "(unclosed")


# --------------------------------------------------------------------------- memoised parsing

TEXTS = ["2026-01-15T11:55:00Z", "2026-01-15T11:55:00.123+05:30", "2026-01-01T10:00:00",
         "2026-06-01", "2026-03-29T02:30:00", "12:00", "22:00:30", "25:00", "", "abc",
         "2026-13-01", "x" * 100, "2026-01-15T11:55:00Z" + " " * 60]  # fmt: skip
ZONES: list[tzinfo] = [UTC, BERLIN, ZoneInfo("America/New_York"), timezone(timedelta(0), "Z"),
                       timezone(timedelta(hours=2))]  # fmt: skip


class Text(str):
    """A str subclass: parsed like text, never memoised."""


def _uncached_datetime(value: str, tz: tzinfo) -> datetime | None:
    return values._from_text.__wrapped__(value, tz) if value else None  # type: ignore[attr-defined]


@pytest.mark.parametrize("repeat", [1, 2])
def test_memoised_dates_and_times_equal_fresh_parses(repeat: int) -> None:
    """Same value, same zone object (equal zones of another name keep theirs), either pass."""
    for _ in range(repeat):
        for text in TEXTS:
            for tz in ZONES:
                fresh = _uncached_datetime(text, tz)
                for value in (text, Text(text)):
                    got = as_datetime(value, tz)
                    assert got == fresh and repr(got) == repr(fresh)
                    if got is not None and fresh is not None:  # the caller's zone object
                        assert (got.tzinfo is tz) == (fresh.tzinfo is tz)
                moment = fresh.astimezone(tz).timetz().replace(tzinfo=None) if fresh else None
                short = len(text) <= 8 and ":" in text
                if not short:
                    assert as_time_of_day(text, tz) == moment


def test_zones_equal_by_offset_do_not_share_results() -> None:
    named = timezone(timedelta(0), "Z")
    assert as_datetime("2026-01-01T10:00:00", UTC).tzname() == "UTC"  # type: ignore[union-attr]
    assert as_datetime("2026-01-01T10:00:00", named).tzname() == "Z"  # type: ignore[union-attr]


def test_memos_are_bounded_and_skip_long_text() -> None:
    for i in range(values._MEMO_LIMIT + 10):
        as_datetime(f"2026-01-01T00:00:{i % 60:02d}.{i:06d}", UTC)
        as_time_of_day(f"2026-01-01T00:00:00.{i:06d}", BERLIN)
    assert 0 < len(values._DATES) <= values._MEMO_LIMIT
    assert 0 < len(values._TIMES) <= values._MEMO_LIMIT
    long = "2026-01-01T00:00:00" + "0" * 100
    as_datetime(long, UTC)
    assert not any(text == long for text, _ in values._DATES)
