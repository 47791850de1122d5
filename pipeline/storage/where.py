"""Filter expressions a user types: ``field op value``, e.g. ``temperature > -15``.

The grammar is deliberately small: one comparison per expression, several expressions ANDed
by the caller (``--where`` repeated, or a list in the API). A field is a name (``temperature``,
``doorOpen``, ``data.status``), a quoted name (``"Door open"``), or a field id (``#4``). The
operators are ``= != > >= < <=``. The value is the rest of the text; quotes around it are
removed (``status = "on hold"``) and make the value text even if it looks like a number
(``code = "0042"`` compares text, for a field whose values are text).

Parsing knows nothing of types: :mod:`eventray.pipeline.storage.fields` resolves the name
through the templates (or a rule's capture fields) and converts the value to the field's
type. Nothing here ever becomes SQL text; values end up as query parameters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from eventray.pipeline.errors import InvalidQuery

__all__ = ["OPERATORS", "Comparison", "ValueKind", "convert", "infer_kind", "parse_where"]

OPERATORS: dict[str, str] = {"=": "eq", "!=": "neq", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
"""The operators a user writes, and the names the query builders take."""

ValueKind = Literal["number", "string", "bool", "date"]

_MAX_LENGTH = 1000
_FIELD = re.compile(r'\s*(#[0-9]+|"[^"]+"|[A-Za-z_][A-Za-z0-9_.\-]*)\s*')
_OPERATOR = re.compile(r"([=<>!~]+|[A-Za-z]+\b)\s*")
_ALLOWED = " ".join(OPERATORS)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One parsed expression.

    Attributes:
        name: the field name as written (quotes removed); empty for a field id.
        field_id: the id of ``#<id>``, else None.
        op: ``eq neq gt gte lt lte``.
        text: the value as written (quotes removed).
        quoted: the value was quoted (it is text, whatever it looks like).
        source: the whole expression, for messages.
    """

    name: str
    field_id: int | None
    op: str
    text: str
    quoted: bool
    source: str


def parse_where(expression: str, *, param: str = "where") -> Comparison:
    """Parse ``field op value``.

    Raises:
        InvalidQuery: not of that form, an unknown operator, an empty value, a field id out
            of 0..65535.
    """
    if len(expression) > _MAX_LENGTH:
        raise InvalidQuery(f"filter longer than {_MAX_LENGTH} characters", param=param)
    field = _FIELD.match(expression)
    if field is None:
        raise InvalidQuery(
            f"expected 'field op value' (op one of {_ALLOWED}), got {expression!r}", param=param
        )
    token = field.group(1)
    operator = _OPERATOR.match(expression, field.end())
    if operator is None:
        raise InvalidQuery(
            f"expected an operator ({_ALLOWED}) after {token!r} in {expression!r}", param=param
        )
    op = OPERATORS.get(operator.group(1))
    if op is None:
        raise InvalidQuery(
            f"unknown operator {operator.group(1)!r} in {expression!r}; use one of {_ALLOWED}",
            param=param,
        )
    raw = expression[operator.end() :].strip()
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'"
    text = raw[1:-1] if quoted else raw
    if not raw:
        raise InvalidQuery(
            f'no value after {operator.group(1)!r} in {expression!r} (quote an empty text: "")',
            param=param,
        )
    field_id: int | None = None
    name = token
    if token.startswith("#"):
        field_id = int(token[1:])
        if field_id > 65535:
            raise InvalidQuery(f"field id must be 0..65535, got {token}", param=param)
        name = ""
    elif token.startswith('"'):
        name = token[1:-1]
    return Comparison(name, field_id, op, text, quoted, expression)


def convert(
    comparison: Comparison, kind: ValueKind, *, param: str = "where"
) -> float | bool | str | datetime:
    """The value of ``comparison`` as a ``kind``: float, str, bool or an aware datetime.

    Raises:
        InvalidQuery: the value is not of that type, or the operator does not apply to it
            (a boolean is only ``=`` or ``!=``).
    """
    text, source = comparison.text, comparison.source
    if kind == "bool":
        if comparison.op not in ("eq", "neq"):
            raise InvalidQuery(f"{source!r}: a boolean field takes = or != only", param=param)
        lowered = text.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise InvalidQuery(f"{source!r}: {text!r} is not a boolean (true or false)", param=param)
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise InvalidQuery(f"{source!r}: {text!r} is not a number", param=param)
        return number
    if kind == "date":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidQuery(
                f"{source!r}: {text!r} is not an ISO-8601 date or time "
                "(2026-03-01, 2026-03-01T08:00:00Z)",
                param=param,
            ) from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return text


def infer_kind(comparison: Comparison) -> ValueKind:
    """The type a value reads as when no declaration says: quoted is text; else a number,
    a boolean, an ISO date (a date needs at least ``YYYY-MM-DD``), or text."""
    if comparison.quoted:
        return "string"
    text = comparison.text
    try:
        if math.isfinite(float(text)):
            return "number"
    except ValueError:
        pass
    if text.lower() in ("true", "false"):
        return "bool"
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?", text):
        try:
            datetime.fromisoformat(text)
            return "date"
        except ValueError:
            pass
    return "string"
