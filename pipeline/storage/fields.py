"""Filter expressions resolved to typed, stored fields: EVA fields through the asset templates,
capture fields through the rules.

**EVA fields by name.** Events keep EVA values in typed maps keyed by field id; a template's
``dynamicFields`` say which name has which id and type. A name matches a template's field by
its display name, compared without case, spaces or punctuation (``temperature``,
``door_open`` and ``"Door open"`` all name ``Door open``); when a template has no field of
that display name, the field's value path counts too (``doorOpen``, ``data.doorOpen`` name the
field fed by ``data.doorOpen``). Only templates the query may see are asked: those of the
assets and organizations in the (narrowed) scope.

Across those templates one name may sit under different ids (tenant A keeps temperature under
id 1, tenant B under id 2): the filter becomes an OR over the template families, each field id
checked only on events made by the templates that declare it (:class:`NamedEvaFilter`). One
name with different *types* across templates (text in one, number in another) cannot be
compared with one value and is refused, naming the templates; filter by id (``#4``) or narrow
the organization to pick one.

**EVA fields by id** (``#4 > 10``) take the type the templates in scope give that id, or, when
none declares it, the type the value reads as (see :func:`infer_kind`); they are not
restricted to templates.

**Capture fields** of ``logs_capture`` are keyed by name; their type is what the rules in
scope declare (``captureFields``), and a filter applies to the captures of the rules that
declare the name with that type.

Every refusal is an :class:`~eventray.pipeline.errors.InvalidQuery` naming the expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eventray.pipeline.errors import InvalidQuery
from eventray.pipeline.models import AssetTemplate, Rule
from eventray.pipeline.models.template import DynamicField
from eventray.pipeline.storage.query import EvaAlternative, EvaFilter, EvaOperand, NamedEvaFilter
from eventray.pipeline.storage.where import Comparison, ValueKind, convert, infer_kind, parse_where

__all__ = [
    "CaptureFilter",
    "normalise_name",
    "resolve_capture_filters",
    "resolve_eva_filters",
]

_KIND: dict[str, ValueKind] = {
    "number": "number",
    "string": "string",
    "bool": "bool",
    "date": "date",
    "geo": "string",  # stored as "lat,lng" text
    "text": "string",  # capture field types
    "boolean": "bool",
}
_MAX_LISTED = 40


def normalise_name(name: str) -> str:
    """``name`` lowercased with everything but letters and digits removed."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _template_matches(template: AssetTemplate, key: str) -> list[DynamicField]:
    by_name = [f for f in template.dynamic_fields if normalise_name(f.field) == key]
    if by_name:
        return by_name
    return [
        f
        for f in template.dynamic_fields
        if normalise_name(f.value) == key or normalise_name(f.value.rsplit(".", 1)[-1]) == key
    ]


def _value(comparison: Comparison, kind: ValueKind, geo: bool, param: str) -> EvaOperand:
    if geo and comparison.op not in ("eq", "neq"):
        raise InvalidQuery(f"{comparison.source!r}: a geo field takes = or != only", param=param)
    return convert(comparison, kind, param=param)


def _listing(items: Iterable[str]) -> str:
    names = sorted(set(items))
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _by_id(
    comparison: Comparison, field_id: int, templates: Sequence[AssetTemplate], param: str
) -> EvaFilter:
    declared: dict[str, list[str]] = {}
    for template in templates:
        for f in template.dynamic_fields:
            if f.field_id == field_id:
                declared.setdefault(f.type, []).append(template.id)
    if len(declared) > 1:
        kinds = "; ".join(f"{t} in {_listing(ids)}" for t, ids in sorted(declared.items()))
        raise InvalidQuery(
            f"{comparison.source!r}: field #{field_id} has different types in the templates in "
            f"scope ({kinds}); narrow the organization",
            param=param,
        )
    if declared:
        [eva_type] = declared
        return (
            field_id,
            comparison.op,
            _value(comparison, _KIND[eva_type], eva_type == "geo", param),
        )
    kind = infer_kind(comparison)
    return (field_id, comparison.op, _value(comparison, kind, False, param))


def _by_name(
    comparison: Comparison, templates: Sequence[AssetTemplate], param: str
) -> NamedEvaFilter:
    key = normalise_name(comparison.name)
    if not key:
        raise InvalidQuery(f"{comparison.source!r}: empty field name", param=param)
    families: dict[tuple[int, str], list[str]] = {}
    for template in templates:
        found = {(f.field_id, f.type) for f in _template_matches(template, key)}
        if len(found) > 1:
            listed = ", ".join(f"#{fid} ({kind})" for fid, kind in sorted(found))
            raise InvalidQuery(
                f"{comparison.source!r}: {comparison.name!r} names several fields of template "
                f"{template.id!r} ({listed}); filter by id",
                param=param,
            )
        for item in found:
            families.setdefault(item, []).append(template.id)
    if not families:
        known = (f.field for t in templates for f in t.dynamic_fields)
        raise InvalidQuery(
            f"{comparison.source!r}: unknown field {comparison.name!r}; the templates in scope "
            f"have: {_listing(known) or 'no EVA fields'}",
            param=param,
        )
    types = {eva_type for _, eva_type in families}
    if len(types) > 1:
        kinds = "; ".join(
            f"#{fid} {eva_type} in {_listing(ids)}"
            for (fid, eva_type), ids in sorted(families.items())
        )
        raise InvalidQuery(
            f"{comparison.source!r}: {comparison.name!r} has different types in the templates in "
            f"scope ({kinds}); narrow the organization or filter by id",
            param=param,
        )
    [eva_type] = types
    value = _value(comparison, _KIND[eva_type], eva_type == "geo", param)
    alternatives = tuple(
        EvaAlternative(tuple(sorted(ids)), fid, value) for (fid, _), ids in sorted(families.items())
    )
    return NamedEvaFilter(comparison.name, comparison.op, alternatives)


def resolve_eva_filters(
    expressions: Sequence[str], templates: Iterable[AssetTemplate]
) -> tuple[tuple[EvaFilter, ...], tuple[NamedEvaFilter, ...]]:
    """Parse and resolve ``field op value`` expressions against ``templates``.

    Returns:
        ``(by_id, by_name)``: the :class:`EventQuery` ``eva`` and ``named`` filters.

    Raises:
        InvalidQuery: a malformed expression, an unknown field, an ambiguous name, a value
            that is not of the field's type; ``param`` is ``where[<index>]``.
    """
    pool = sorted(templates, key=lambda t: t.id)
    by_id: list[EvaFilter] = []
    by_name: list[NamedEvaFilter] = []
    for index, expression in enumerate(expressions):
        param = f"where[{index}]"
        comparison = parse_where(expression, param=param)
        if comparison.field_id is not None:
            by_id.append(_by_id(comparison, comparison.field_id, pool, param))
        else:
            by_name.append(_by_name(comparison, pool, param))
    return tuple(by_id), tuple(by_name)


@dataclass(frozen=True, slots=True)
class CaptureFilter:
    """A filter on a capture field of ``logs_capture``: records of ``rule_ids`` whose capture
    ``name`` compares true with ``value`` (its Python type picks the typed map)."""

    name: str
    op: str
    rule_ids: tuple[str, ...]
    value: Any

    def __post_init__(self) -> None:
        if not self.rule_ids:
            raise InvalidQuery(f"capture field {self.name!r} names no rule", param="where")
        if self.op not in ("eq", "neq", "gt", "gte", "lt", "lte"):
            raise InvalidQuery(f"unknown operator {self.op!r}", param="where")
        if isinstance(self.value, bool) and self.op not in ("eq", "neq"):
            raise InvalidQuery("boolean capture filters take eq or neq", param="where")


def resolve_capture_filters(
    expressions: Sequence[str], rules: Iterable[Rule]
) -> tuple[CaptureFilter, ...]:
    """Parse and resolve ``field op value`` expressions against the capture fields ``rules``
    declare (names compare exactly: they are the keys of the stored maps).

    Raises:
        InvalidQuery: malformed, a field id (captures have names only), a name no rule in
            scope declares, a name declared with different types, a value of the wrong type.
    """
    pool = sorted(rules, key=lambda r: r.id)
    out: list[CaptureFilter] = []
    for index, expression in enumerate(expressions):
        param = f"where[{index}]"
        comparison = parse_where(expression, param=param)
        if comparison.field_id is not None:
            raise InvalidQuery(
                f"{expression!r}: capture fields are named, not numbered", param=param
            )
        declared: dict[str, list[str]] = {}
        for rule in pool:
            for capture in rule.capture_fields:
                if capture.name == comparison.name:
                    declared.setdefault(capture.type, []).append(rule.id)
        if not declared:
            known = (c.name for r in pool for c in r.capture_fields)
            raise InvalidQuery(
                f"{expression!r}: unknown capture field {comparison.name!r}; the rules in scope "
                f"capture: {_listing(known) or 'nothing'}",
                param=param,
            )
        if len(declared) > 1:
            kinds = "; ".join(f"{t} in {_listing(ids)}" for t, ids in sorted(declared.items()))
            raise InvalidQuery(
                f"{expression!r}: capture field {comparison.name!r} has different types in the "
                f"rules in scope ({kinds}); filter by rule",
                param=param,
            )
        [(capture_type, rule_ids)] = declared.items()
        value = convert(comparison, _KIND[capture_type], param=param)
        out.append(CaptureFilter(comparison.name, comparison.op, tuple(rule_ids), value))
    return tuple(out)
