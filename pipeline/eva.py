"""EVA fields: typed values extracted from a Standard Event into typed maps.

A template's ``dynamicFields`` say which dot path feeds which ``fieldId`` with which type; the
events table stores them as ``eva_number Map(UInt16, Float64)``, ``eva_string``, ``eva_bool``
and ``eva_date``. A value that does not fit its declared type is left out (and counted), never
stored as something else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventray.pipeline.models.template import DynamicField
from eventray.pipeline.paths import MISSING, compile_path
from eventray.pipeline.rules.values import as_datetime, iso

__all__ = ["EvaValues", "extract_eva"]


@dataclass(slots=True)
class EvaValues:
    number: dict[int, float] = field(default_factory=dict)
    string: dict[int, str] = field(default_factory=dict)
    bool: dict[int, int] = field(default_factory=dict)
    date: dict[int, str] = field(default_factory=dict)
    rejected: list[int] = field(default_factory=list)


Extractor = Callable[[dict[str, Any], EvaValues], None]


def _extractor(spec: DynamicField) -> Extractor:
    get, fid, kind = compile_path(spec.value), spec.field_id, spec.type

    def extract(event: dict[str, Any], out: EvaValues) -> None:
        value = get(event)
        if value is MISSING or value is None:
            return
        if kind == "number":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.number[fid] = float(value)
                return
        elif kind == "string":
            if isinstance(value, str):
                out.string[fid] = value
                return
        elif kind == "bool":
            if isinstance(value, bool):
                out.bool[fid] = int(value)
                return
        elif kind == "date":
            moment = as_datetime(value)
            if moment is not None:
                out.date[fid] = iso(moment)
                return
        elif kind == "geo" and isinstance(value, dict) and {"lat", "lng"} <= value.keys():
            out.string[fid] = f"{value['lat']},{value['lng']}"
            return
        out.rejected.append(fid)

    return extract


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
