"""Reading stored events back: a typed query, parameterised SQL, keyset pages.

Every user value travels as a ClickHouse server-side parameter (``{name:Type}``), never
inside the SQL text; the only names formatted into the text are the database (checked to be a
plain identifier) and fixed column names. Reads use ``FINAL`` so a redelivered event that was
written twice and not merged yet still appears once (see :mod:`pipeline.storage.schema`).

Pages are ordered by ``(created, event_tracker_id)`` and continue after the last row of the
previous page (keyset pagination): unlike ``OFFSET``, a page costs the same however deep it
is, and rows inserted meanwhile cannot shift or repeat rows across pages.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from eventray.pipeline.errors import InvalidQuery
from eventray.pipeline.ports import EventStore
from eventray.pipeline.storage.conditions import DATE, organizations, time_range
from eventray.pipeline.storage.rows import format_ts
from eventray.pipeline.storage.schema import DEFAULT_DATABASE, check_identifier, columns_of
from eventray.pipeline.storage.scope import Scope

__all__ = [
    "EvaAlternative",
    "EvaFilter",
    "EventPage",
    "EventQuery",
    "NamedEvaFilter",
    "build_event_count",
    "build_event_query",
    "count_events",
    "decode_cursor",
    "encode_cursor",
    "query_events",
]

EvaOperand = float | int | str | bool | datetime
EvaFilter = tuple[int, str, EvaOperand]
"""``(field_id, op, value)``; the value's Python type picks the typed map (bool -> eva_bool,
number -> eva_number, str -> eva_string, datetime -> eva_date); ``op`` is one of
``eq neq gt gte lt lte`` (booleans: ``eq neq``)."""

_OPS = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_DATE = DATE
_MAX_LIMIT = 10_000
_COLUMNS = ", ".join(columns_of("events"))


@dataclass(frozen=True, slots=True)
class EvaAlternative:
    """Where one template family keeps a named field: events of ``template_ids`` hold it
    under ``field_id``, compared with ``value`` (whose Python type picks the typed map, as in
    :data:`EvaFilter`)."""

    template_ids: tuple[str, ...]
    field_id: int
    value: EvaOperand


@dataclass(frozen=True, slots=True)
class NamedEvaFilter:
    """A filter on an EVA field by name, resolved through the templates in scope (see
    :mod:`eventray.pipeline.storage.fields`): an event matches if it was made by one of an
    alternative's templates and that template's field compares true. Restricting each field
    id to the templates that declare it keeps another template's use of the same id (say,
    humidity under id 1) from answering a question about temperature."""

    name: str
    op: str
    alternatives: tuple[EvaAlternative, ...]

    def __post_init__(self) -> None:
        if not self.alternatives:
            raise InvalidQuery(f"field {self.name!r} resolves to no template field", param="where")
        for alt in self.alternatives:
            _check_eva(alt.field_id, self.op, alt.value)
            if not alt.template_ids:
                raise InvalidQuery(f"field {self.name!r}: an alternative names no template")


def _check_eva(field_id: int, op: str, value: object) -> None:
    if isinstance(field_id, bool) or not 0 <= field_id <= 65535:
        raise InvalidQuery(f"EVA field id must be 0..65535, got {field_id!r}", param="where")
    if op not in _OPS:
        raise InvalidQuery(f"EVA operator must be one of {sorted(_OPS)}, got {op!r}", param="where")
    if isinstance(value, bool) and op not in ("eq", "neq"):
        raise InvalidQuery(f"EVA boolean filters take eq or neq, got {op!r}", param="where")
    if not isinstance(value, (int, float, str, datetime)):
        raise InvalidQuery(
            f"EVA value must be a number, text, bool or datetime: {value!r}", param="where"
        )


def encode_cursor(created: str, event_tracker_id: str) -> str:
    """An opaque cursor for the position after the row ``(created, event_tracker_id)``."""
    return base64.urlsafe_b64encode(orjson.dumps([created, event_tracker_id])).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The ``(created, event_tracker_id)`` a cursor stands for; ValueError if it is not one."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, orjson.JSONDecodeError, UnicodeEncodeError) as exc:
        raise InvalidQuery(f"invalid cursor {cursor!r}", param="cursor") from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
    ):
        raise InvalidQuery(f"invalid cursor {cursor!r}", param="cursor")
    return value[0], value[1]


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to read.

    Args:
        org_id: the organization; may be empty when ``scope`` is given (the whole scope).
        path_key: the organization's pathKey. Required with ``include_children``; when given,
            the read is served by the table's sorting key.
        include_children: also every organization below it (pathKey prefix).
        asset_id: only this asset.
        event_type: only this Standard Event type.
        since: ``created >= since`` (timezone-aware; naive means UTC).
        until: ``created < until``.
        event_tracker_id: only this event.
        eva: typed EVA filters by field id, all of which must hold (see :data:`EvaFilter`).
        limit: rows per page, 1..10000.
        cursor: ``next_cursor`` of the previous page.
        scope: the caller's tenant scope, ANDed to everything else: no filter reads outside
            it. None: no restriction beyond the filters (trusted callers only).
        named: EVA filters by field name (see :class:`NamedEvaFilter`), all of which must hold.
    """

    org_id: str = ""
    path_key: str = ""
    include_children: bool = False
    asset_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_tracker_id: str | None = None
    eva: tuple[EvaFilter, ...] = ()
    limit: int = 100
    cursor: str | None = None
    scope: Scope | None = None
    named: tuple[NamedEvaFilter, ...] = ()

    def __post_init__(self) -> None:
        if not self.org_id and self.scope is None:
            raise InvalidQuery("org_id is required", param="org")
        if self.include_children and not self.path_key:
            raise InvalidQuery("include_children needs the organization's path_key", param="org")
        if isinstance(self.limit, bool) or not 1 <= self.limit <= _MAX_LIMIT:
            raise InvalidQuery(f"limit must be 1..{_MAX_LIMIT}, got {self.limit!r}", param="limit")
        for field_id, op, value in self.eva:
            _check_eva(field_id, op, value)
        if self.cursor is not None:
            decode_cursor(self.cursor)


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events, oldest first; ``next_cursor`` is None on the last page."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def _eva_condition(key: str, val: str, op: str, value: EvaOperand) -> tuple[str, Any]:
    bound: Any
    if isinstance(value, bool):
        column, kind, bound = "eva_bool", "UInt8", int(value)
    elif isinstance(value, (int, float)):
        column, kind, bound = "eva_number", "Float64", float(value)
    elif isinstance(value, datetime):
        column, kind, bound = "eva_date", _DATE, format_ts(value)
    else:
        column, kind, bound = "eva_string", "String", value
    # A missing key reads as the type's default (0, ''), so presence is checked first.
    sql = (
        f"mapContains({column}, {{{key}:UInt16}}) "
        f"AND {column}[{{{key}:UInt16}}] {_OPS[op]} {{{val}:{kind}}}"
    )
    return sql, bound


def _named_condition(index: int, named: NamedEvaFilter) -> tuple[str, dict[str, Any]]:
    parts: list[str] = []
    params: dict[str, Any] = {}
    for number, alt in enumerate(named.alternatives):
        tag = f"name{index}_{number}"
        sql, bound = _eva_condition(f"{tag}_field", f"{tag}_value", named.op, alt.value)
        parts.append(f"(template_id IN {{{tag}_templates:Array(String)}} AND {sql})")
        params[f"{tag}_templates"] = list(alt.template_ids)
        params[f"{tag}_field"] = alt.field_id
        params[f"{tag}_value"] = bound
    return "(" + " OR ".join(parts) + ")", params


def _where(query: EventQuery) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    if query.scope is not None:
        sql, bound = query.scope.condition()
        if sql:
            where.append(sql)
            params.update(bound)
    organizations(where, params, include_children=query.include_children,
                  org_id=query.org_id, path_key=query.path_key)  # fmt: skip
    if query.asset_id is not None:
        where.append("asset_id = {asset_id:String}")
        params["asset_id"] = query.asset_id
    if query.event_type is not None:
        where.append("event_type = {event_type:String}")
        params["event_type"] = query.event_type
    time_range(where, params, query.since, query.until)
    if query.event_tracker_id is not None:
        where.append("event_tracker_id = {event_tracker_id:String}")
        params["event_tracker_id"] = query.event_tracker_id
    for index, (field_id, op, value) in enumerate(query.eva):
        sql, bound = _eva_condition(f"eva{index}_field", f"eva{index}_value", op, value)
        where.append(sql)
        params[f"eva{index}_field"] = field_id
        params[f"eva{index}_value"] = bound
    for index, named in enumerate(query.named):
        sql, bound_params = _named_condition(index, named)
        where.append(sql)
        params.update(bound_params)
    return where, params


def build_event_query(
    query: EventQuery, *, database: str = DEFAULT_DATABASE
) -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` reading one page plus one row (to know whether more follow)."""
    where, params = _where(query)
    if query.cursor is not None:
        created, tracker = decode_cursor(query.cursor)
        # Expanded rather than a tuple comparison, so the primary index on created applies.
        where.append(
            f"created >= {{after_created:{_DATE}}} AND (created > {{after_created:{_DATE}}} "
            "OR event_tracker_id > {after_tracker:String})"
        )
        params["after_created"] = created
        params["after_tracker"] = tracker
    params["limit"] = query.limit + 1
    sql = (
        f"SELECT {_COLUMNS} FROM {check_identifier(database)}.events FINAL\n"
        f"WHERE {' AND '.join(where) or '1'}\n"
        "ORDER BY created, event_tracker_id\n"
        "LIMIT {limit:UInt32}"
    )
    return sql, params


def build_event_count(
    query: EventQuery, *, database: str = DEFAULT_DATABASE
) -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` counting every event the query matches (cursor and limit aside)."""
    where, params = _where(query)
    sql = (
        f"SELECT count() AS n FROM {check_identifier(database)}.events FINAL\n"
        f"WHERE {' AND '.join(where) or '1'}"
    )
    return sql, params


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as Python values: JSON columns parsed, EVA keys as ints, 0/1 as bools.

    JSON output writes map keys as text and 64-bit integers as quoted text, whatever the
    server; normalising here keeps both adapters' rows identical.
    """
    row["payload"] = orjson.loads(row["payload"])
    row["metadata"] = orjson.loads(row["metadata"])
    row["eva_number"] = {int(k): float(v) for k, v in row["eva_number"].items()}
    row["eva_string"] = {int(k): v for k, v in row["eva_string"].items()}
    row["eva_bool"] = {int(k): bool(v) for k, v in row["eva_bool"].items()}
    row["eva_date"] = {int(k): v for k, v in row["eva_date"].items()}
    row["retention_days"] = int(row["retention_days"])
    row["stream_seq"] = int(row["stream_seq"])
    return row


def query_events(
    store: EventStore, query: EventQuery, *, database: str = DEFAULT_DATABASE
) -> EventPage:
    """One page of events from any :class:`EventStore`."""
    sql, params = build_event_query(query, database=database)
    rows = store.select(sql, params)
    more = len(rows) > query.limit
    rows = [_decode(row) for row in rows[: query.limit]]
    cursor = None
    if more and rows:
        last = rows[-1]
        cursor = encode_cursor(last["created"], last["event_tracker_id"])
    return EventPage(rows, cursor)


def count_events(store: EventStore, query: EventQuery, *, database: str = DEFAULT_DATABASE) -> int:
    """How many stored events match ``query`` (each event once, even if written twice)."""
    sql, params = build_event_count(query, database=database)
    return int(store.select(sql, params)[0]["n"])
