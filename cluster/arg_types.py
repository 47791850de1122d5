"""Value types for the ``eventray`` command's flags.

argparse calls these on the text given; the ``ArgumentTypeError`` they raise becomes a usage
error (exit 2) naming the flag and the reason, before any command starts: ``--events -5`` must never reach a loop
that would do nothing, or a server that would answer 422.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["DATA_DIR_HELP", "bounded_int", "non_negative_float", "positive_float", "positive_int"]

DATA_DIR_HELP = (
    "the data directory of the stack (default: $EVENTRAY_DATA_DIR, else .eventray in the "
    "working directory)"
)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1 (a count, a size, a page)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``[low, high]``."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {text}")
        return value

    return parse


def positive_float(text: str) -> float:
    """A number above 0 (a duration in seconds, days)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    """A number of at least 0 (a rate where 0 means unlimited)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value
