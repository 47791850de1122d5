"""The results of a batch as text: their envelope, how they are checked, split and decoded.

The JavaScript loop turns each event's outcome into its own JSON text, ``{"r": ...}`` or
``{"e": {"stage": ..., "message": ...}}``, and joins them with ``",\\n"``: a sequence JSON text
never holds (a newline inside a string is always escaped), so the results can be counted and
split without being parsed. The whole batch is then ``"[" + joined + "]"``, decoded by one
``orjson.loads`` in the process that uses the results.

Decoding falls back to one result at a time only when the whole text does not decode: JSON
allows a lone UTF-16 surrogate escape (``"\\ud83d"``, which a payload can carry into a result),
orjson refuses it, and so does any consumer that needs valid Unicode. That result alone becomes
the event's failure; every other event keeps its result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import repeat
from operator import contains
from typing import Any, TypedDict

import orjson

__all__ = [
    "CRASH_STAGE",
    "MALFORMED",
    "SEPARATOR",
    "ScriptResult",
    "decode_results",
    "error_text",
    "looks_joined",
    "malformed",
    "well_formed",
]

SEPARATOR = ",\n"
CRASH_STAGE = "script"
MALFORMED = "the script runtime returned a malformed result for this event"
_HEADS = ('{"r":', '{"e":{"stage":')
_SURROGATE = re.compile("[\ud800-\udfff]")


class ScriptResult(TypedDict, total=False):
    """One event's outcome: ``r`` the final result, or ``e`` ``{stage, message, line?}``;
    ``s`` holds each stage's output when the batch ran with ``trace=True``."""

    r: Any
    e: dict[str, Any]
    s: dict[str, Any]


def error_text(stage: str, message: str) -> str:
    """One event's failure in the envelope the JavaScript loop uses."""
    return orjson.dumps({"e": {"stage": stage, "message": message}}).decode()


def well_formed(joined: str, count: int) -> bool:
    """Whether ``joined`` holds exactly ``count`` results (a check of the separators, without
    parsing; each result's envelope is checked when it is decoded)."""
    if count == 0:
        return joined == ""
    return looks_joined(joined) and joined.count(SEPARATOR) == count - 1


def looks_joined(joined: object) -> bool:
    """The constant-time part of :func:`well_formed`: the hot path leaves the count to the
    decoding, which checks it anyway."""
    return isinstance(joined, str) and joined.startswith(_HEADS) and joined.endswith("}")


def decode_results(
    text: str | bytes, count: int, stages: Sequence[str]
) -> list[ScriptResult] | None:
    """The ``count`` results of ``"[" + joined + "]"`` (``stages``: the bundle's stage names,
    to attribute a result that does not decode), or None if the text does not hold ``count``
    results (the caller then runs the events again, one at a time). Never raises."""
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError:
        decoded = None
    if type(decoded) is list and len(decoded) == count and _all_results(decoded):
        return decoded
    inner = text[1:-1]
    parts: Sequence[str | bytes] = (
        inner.split(SEPARATOR) if isinstance(inner, str) else inner.split(SEPARATOR.encode())
    )
    if count == 0 or len(parts) != count:
        return None
    return [_decode_one(part, stages) for part in parts]


def malformed() -> ScriptResult:
    """The failure of an event whose result the runtime did not deliver in its envelope."""
    return {"e": {"stage": CRASH_STAGE, "message": MALFORMED}}


def _all_results(decoded: list[Any]) -> bool:
    """Every item is an envelope: a dict with "r" or "e" (C-level passes, no Python loop)."""
    if set(map(type, decoded)) != {dict}:
        return False
    enveloped = sum(map(contains, decoded, repeat("r"))) + sum(map(contains, decoded, repeat("e")))
    return enveloped == len(decoded)


def _decode_one(part: str | bytes, stages: Sequence[str]) -> ScriptResult:
    try:
        value = orjson.loads(part)
    except orjson.JSONDecodeError as exc:
        return _undecodable(part, str(exc), stages)
    if type(value) is not dict or not ("r" in value or type(value.get("e")) is dict):
        return malformed()
    result: ScriptResult = value  # type: ignore[assignment]
    return result


def _undecodable(part: str | bytes, reason: str, stages: Sequence[str]) -> ScriptResult:
    if "surrogate" in reason:
        why = "lone UTF-16 surrogate in a string"
    elif "depth" in reason or "recursion" in reason:
        why = "nested more than 1024 levels deep"
    else:
        return malformed()
    try:
        value = json.loads(part)  # the standard library accepts lone surrogates
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        return {"e": {"stage": stages[-1] if stages else CRASH_STAGE, "message": _why(why, "")}}
    if isinstance(value.get("e"), dict):
        # A failure whose own message carries the surrogate: keep it, made legible.
        error = value["e"]
        return {
            "e": {
                key: _legible(item) if isinstance(item, str) else item
                for key, item in error.items()
            }
        }
    stage, where = _culprit(value, stages)
    return {"e": {"stage": stage, "message": _why(why, where)}}


def _why(why: str, where: str) -> str:
    return f"result is not serialisable: {why}" + (f" at {where}" if where else "")


def _legible(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _culprit(value: dict[str, Any], stages: Sequence[str]) -> tuple[str, str]:
    """The stage whose output holds the lone surrogate (the first traced one that does, else the
    last stage) and where in it."""
    steps = value.get("s")
    if isinstance(steps, dict):
        for stage in stages:
            if stage in steps:
                where = _surrogate_path(steps[stage])
                if where is not None:
                    return stage, where
    last = stages[-1] if stages else CRASH_STAGE
    return last, _surrogate_path(value.get("r")) or ""


def _surrogate_path(value: Any) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, depth-first; "" for the
    value itself, None if there is none. Iterative: a result can be nested very deep."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return _legible(path)
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{path}.{key}" if path else str(key)
                if _SURROGATE.search(key):
                    return _legible(child_path)
                stack.append((child_path, child))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append((f"{path}[{index}]", item[index]))
    return None
