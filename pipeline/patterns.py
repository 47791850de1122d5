"""Tenant-written regular expressions, matched by RE2: linear time, whatever the pattern.

Python's ``re`` backtracks, and cannot be interrupted: ``(a+)+$`` against thirty ``a`` and a
``b`` takes seconds, and every character more doubles it, while the lane thread that runs it
serves every tenant on that lane. So every pattern a tenant writes (route group ``regex``
match rules, the rules' ``regex`` operator, whether its pattern is written in the rule, given
as a business rule parameter or read from an event) is compiled and matched by RE2
(``google-re2``), whose time is linear in the text and whose memory per pattern is bounded.

RE2's syntax is Python's for everything but what needs backtracking: backreferences (``\\1``,
``(?P=name)``) and lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``) are refused, with RE2's
reason, when the configuration is loaded. Smaller differences: the end of the text is ``\\z``
(Python's ``\\Z``), ``$`` matches only at the end of the text (not before a final newline),
and ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII (``\\pL``, ``\\p{Greek}`` name Unicode
classes). A match is a search: the pattern may match anywhere unless anchored with ``^``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import re2
from re2 import _re2

__all__ = ["MAX_PATTERN_MEMORY", "Pattern", "PatternError", "cached_pattern", "compile_pattern"]

MAX_PATTERN_MEMORY = 1 << 20
"""Bytes RE2 may use for one pattern (program and matching cache). A pattern too large for it
is refused; matching with a full cache goes on, slower, still in linear time."""

_DYNAMIC_CACHE = 256  # compiled patterns kept for patterns that arrive with events


class PatternError(ValueError):
    """A pattern RE2 does not take; the message says why."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # reported to the tenant, not to the process's stderr
    options.never_capture = True  # only "does it match" is asked
    options.max_mem = MAX_PATTERN_MEMORY
    return options


_OPTIONS = _options()
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_NO_MATCH = (-1, -1)


class Pattern:
    """One compiled tenant pattern. :meth:`search` says whether it matches anywhere in a text,
    in time linear in the text."""

    __slots__ = ("_match", "source")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise PatternError(f"a pattern is text, not {type(source).__name__}")
        compiled = _re2.RE2(source.encode("utf-8", "surrogatepass"), _OPTIONS)
        if not compiled.ok():
            reason = compiled.error()
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise PatternError(_explain(str(reason), source))
        self.source = source
        self._match: Callable[[Any, bytes, int, int], list[tuple[int, int]]] = compiled.Match

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text``."""
        data = text.encode("utf-8", "surrogatepass")
        return self._match(_UNANCHORED, data, 0, len(data))[0] != _NO_MATCH

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


def _explain(reason: str, source: str) -> str:
    """RE2's reason, with a hint where it refuses what Python's ``re`` would take."""
    linear = "patterns run in linear time (RE2 syntax)"
    if reason.startswith(tuple(f"invalid perl operator: (?{x}" for x in ("=", "!", "<=", "<!"))):
        return f"{reason}: lookaround is not supported, {linear}"
    if (reason.startswith("invalid escape sequence: \\") and reason[-1:].isdigit()) or (
        reason == "invalid perl operator: (?P" and "(?P=" in source
    ):
        return f"{reason}: backreferences are not supported, {linear}"
    if reason == "invalid escape sequence: \\Z":
        return f"{reason}: the end of the text is \\z in RE2 syntax"
    if reason == "pattern too large - compile failed":
        return f"pattern too large: over {MAX_PATTERN_MEMORY // 1024} KiB compiled (RE2)"
    return f"{reason} (RE2 syntax)"


def compile_pattern(source: str) -> Pattern:
    """The compiled pattern; raises :class:`PatternError` with the reason if RE2 refuses it."""
    return Pattern(source)


@lru_cache(maxsize=_DYNAMIC_CACHE)
def cached_pattern(source: str) -> Pattern:
    """:func:`compile_pattern`, remembered: for patterns known only per event (a business rule
    whose pattern is a state variable or an event field). Bounded, so distinct patterns an
    event stream carries cannot pin unbounded memory."""
    return Pattern(source)
