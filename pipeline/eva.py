"""EVA fields: typed values extracted from a Standard Event into typed maps.

A template's ``dynamicFields`` say which dot path feeds which ``fieldId`` with which type; the
events table stores them as ``eva_number Map(UInt16, Float64)``, ``eva_string``, ``eva_bool``
and ``eva_date``. A value that does not fit its declared type is left out (and counted), never
stored as something else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eventray.pipeline.models.template import DynamicField
from eventray.pipeline.paths import MISSING, Getter, compile_path
from eventray.pipeline.rules.values import as_datetime

__all__ = ["EvaValues", "extract_eva"]


@dataclass(slots=True)
class EvaValues:
    """One event's typed values per field id; dates as epoch milliseconds (the stored form)."""

    number: dict[int, float] = field(default_factory=dict)
    string: dict[int, str] = field(default_factory=dict)
    bool: dict[int, int] = field(default_factory=dict)
    date: dict[int, int] = field(default_factory=dict)
    rejected: list[int] = field(default_factory=list)


Extractor = Callable[[dict[str, Any], EvaValues], None]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# DateTime64's range: a date outside it would make the store refuse the whole insert.
_MIN_MS, _MAX_MS = -2208988800000, 10413791999000  # 1900-01-01 .. 2299-12-31


def _number(get: Getter, fid: int) -> Extractor:
    def extract(event: dict[str, Any], out: EvaValues) -> None:
        value = get(event)
        if type(value) is float or type(value) is int:  # not bool, not MISSING
            out.number[fid] = float(value)
        elif value is not MISSING and value is not None:
            out.rejected.append(fid)

    return extract


def _string(get: Getter, fid: int) -> Extractor:
    def extract(event: dict[str, Any], out: EvaValues) -> None:
        value = get(event)
        if type(value) is str:
            out.string[fid] = value
        elif value is not MISSING and value is not None:
            out.rejected.append(fid)

    return extract


def _bool(get: Getter, fid: int) -> Extractor:
    def extract(event: dict[str, Any], out: EvaValues) -> None:
        value = get(event)
        if value is True or value is False:
            out.bool[fid] = int(value)
        elif value is not MISSING and value is not None:
            out.rejected.append(fid)

    return extract


def _date(get: Getter, fid: int) -> Extractor:
    def extract(event: dict[str, Any], out: EvaValues) -> None:
        value = get(event)
        if value is MISSING or value is None:
            return
        moment = as_datetime(value)
        if moment is not None:
            ms = (moment - _EPOCH) // _MS
            if _MIN_MS <= ms <= _MAX_MS:
                out.date[fid] = ms
                return
        out.rejected.append(fid)

    return extract


def _geo(get: Getter, fid: int) -> Extractor:
    def extract(event: dict[str, Any], out: EvaValues) -> None:
        value = get(event)
        if isinstance(value, dict) and "lat" in value and "lng" in value:
            out.string[fid] = f"{value['lat']},{value['lng']}"
        elif value is not MISSING and value is not None:
            out.rejected.append(fid)

    return extract


_KINDS = {"number": _number, "string": _string, "bool": _bool, "date": _date, "geo": _geo}


def _extractor(spec: DynamicField) -> Extractor:
    """One extractor per field, specialised by type (a branch on the type per event cost
    more than the extraction)."""
    return _KINDS[spec.type](compile_path(spec.value), spec.field_id)


# Keyed by the identity of a template's field list; the list is kept in the value so its id
# cannot be reused while cached. Hashing pydantic models per event instead cost ~10 us.
_CACHE: dict[int, tuple[Sequence[DynamicField], tuple[Extractor, ...]]] = {}


def _compiled(fields: Sequence[DynamicField]) -> tuple[Extractor, ...]:
    hit = _CACHE.get(id(fields))
    if hit is not None and hit[0] is fields:
        return hit[1]
    if len(_CACHE) > 4096:
        _CACHE.clear()
    extractors = tuple(_extractor(f) for f in fields if f.status == "active")
    _CACHE[id(fields)] = (fields, extractors)
    return extractors


def extract_eva(fields: Sequence[DynamicField], event: dict[str, Any]) -> EvaValues:
    """The EVA values of ``event`` for a template's ``dynamicFields``."""
    out = EvaValues()
    for extract in _compiled(fields):
        extract(event, out)
    return out
