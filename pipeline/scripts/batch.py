"""The payloads of one run: a JSON array for the fast path, its elements when a run narrows.

A batch normally crosses into JavaScript as one array. When part of it must run again on its
own (a payload that does not parse, a context rebuilt after running out of memory), the runner
needs the elements: cut by the bodies' lengths when the caller had bodies (exact even around a
body that is not JSON), else the array split at its top-level commas by a scanner that never
parses (so a lone surrogate escape, deep nesting or a huge number in a payload cannot make the
split itself fail).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from eventray.pipeline.scripts.results import ScriptResult

__all__ = ["PayloadBatch", "encode_payload", "json_array", "run_each_encoded", "split_array"]

# A JSON string (escapes included), or one structural character.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)


def json_array(bodies: list[bytes]) -> bytes:
    """Message bodies (each a JSON document) spliced into one JSON array, unparsed."""
    return b"[" + b",".join(bodies) + b"]"


def encode_payload(payload: Any) -> bytes:
    """One payload's JSON. orjson refuses a str holding a lone surrogate, which the standard
    library writes as an escape (as the payload would arrive over the wire).

    Raises:
        TypeError, ValueError: the payload has no JSON form (a set, NaN, ...).
    """
    try:
        return orjson.dumps(payload)
    except TypeError:
        try:
            return json.dumps(payload, allow_nan=False).encode()
        except RecursionError as exc:
            raise ValueError("nested too deeply") from exc


def run_each_encoded(
    payloads: list[Any], run_raw: Callable[[list[bytes]], list[ScriptResult]], stage: str
) -> list[ScriptResult]:
    """Runs payloads orjson could not encode as a whole: each one encoded on its own, and one
    with no JSON form failing alone (at ``stage``) instead of failing the batch."""
    bodies: list[bytes] = []
    failed: dict[int, ScriptResult] = {}
    for index, payload in enumerate(payloads):
        try:
            bodies.append(encode_payload(payload))
        except (TypeError, ValueError) as exc:
            failed[index] = {"e": {"stage": stage, "message": f"payload is not JSON: {exc}"}}
    results = iter(run_raw(bodies))
    return [failed[i] if i in failed else next(results) for i in range(len(payloads))]


def split_array(array: bytes) -> list[bytes] | None:
    """The elements of a JSON array as raw byte slices, or None if it is not a well-bracketed
    array. Elements are not validated: a bad one fails when it is loaded on its own."""
    stripped = array.strip()
    if not stripped.startswith(b"[") or not stripped.endswith(b"]"):
        return None
    elements: list[bytes] = []
    depth = 0
    start = 1
    for match in _TOKEN.finditer(stripped):
        char = match.group()
        if char[0] == 0x22:  # a string: its brackets and commas are text
            continue
        if char in (b"[", b"{"):
            depth += 1
        elif char in (b"]", b"}"):
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                if match.end() != len(stripped):
                    return None
                elements.append(stripped[start : match.start()])
        elif depth == 1:  # a comma between elements
            elements.append(stripped[start : match.start()])
            start = match.end()
    if depth != 0:
        return None
    if len(elements) == 1 and not elements[0].strip():
        return []  # "[]"
    return [element.strip() for element in elements]


class PayloadBatch:
    """``count`` payloads as one JSON ``array`` (made by :func:`json_array` if ``lengths``, the
    lengths of its elements, are given)."""

    def __init__(self, array: bytes, count: int, lengths: list[int] | None = None) -> None:
        self.array = array
        self.count = count
        self._lengths = lengths
        self._elements: list[bytes] | None = None
        self._split = False

    def elements(self) -> list[bytes] | None:
        """Each payload's JSON, or None if the array does not hold ``count`` elements."""
        if not self._split:
            self._split = True
            self._elements = (
                split_array(self.array) if self._lengths is None else self._cut(self._lengths)
            )
        if self._elements is None or len(self._elements) != self.count:
            return None
        return self._elements

    def _cut(self, lengths: list[int]) -> list[bytes] | None:
        array = self.array
        if len(array) != 2 + sum(lengths) + max(len(lengths) - 1, 0):
            return None
        out: list[bytes] = []
        at = 1
        for length in lengths:
            out.append(array[at : at + length])
            at += length + 1
        return out

    def text(self, lo: int, hi: int) -> str | None:
        """Payloads ``lo..hi-1`` as a JSON array text, or None if that cannot be built (the
        elements cannot be told apart, or the bytes are not UTF-8)."""
        try:
            if (lo, hi) == (0, self.count):
                return self.array.decode()
            elements = self.elements()
            if elements is None:
                return None
            return json_array(elements[lo:hi]).decode()
        except UnicodeDecodeError:
            return None
