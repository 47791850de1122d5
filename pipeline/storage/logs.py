"""Reading the log tables and the DLQ back: typed, tenant-scoped, keyset-paginated queries.

The same habits as :mod:`eventray.pipeline.storage.query`: every user value is a server-side
parameter, reads use ``FINAL``, and pages continue after the last row of the previous one.
Log rows have no natural time-and-id key like events, so a page's order is ``created`` then
the table's sorting key (:data:`SORT_KEYS`), which identifies one record once ``FINAL`` has
collapsed redeliveries: the order is total, so no row repeats or goes missing across pages.

Every query carries a :class:`~eventray.pipeline.storage.scope.Scope`, ANDed to the filters.
A filter that names something outside the scope (an asset, a trigger, a tracker id of another
tenant) therefore finds nothing; an organization filter is checked earlier, by the planner
(:mod:`eventray.pipeline.storage.reading`), and refused like an unknown one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from eventray.pipeline.errors import InvalidQuery
from eventray.pipeline.ports import EventStore
from eventray.pipeline.storage.conditions import DATE, organizations, time_range
from eventray.pipeline.storage.fields import CaptureFilter
from eventray.pipeline.storage.rows import format_ts
from eventray.pipeline.storage.schema import (
    DEFAULT_DATABASE,
    check_identifier,
    column_types,
    columns_of,
)
from eventray.pipeline.storage.scope import Scope

__all__ = [
    "LOG_KINDS",
    "SORT_KEYS",
    "LogPage",
    "LogQuery",
    "build_log_query",
    "decode_log_row",
    "log_columns",
    "query_logs",
]

LOG_KINDS: dict[str, str] = {
    "rules": "logs_rule",
    "captures": "logs_capture",
    "triggers": "logs_trigger",
    "raw": "events_raw",
    "dlq": "dlq",
    "scripts": "logs_script",
    "routers": "logs_router",
}
"""What a user calls each readable table (CLI ``eventray logs <kind>``, API paths)."""

SORT_KEYS: dict[str, tuple[str, ...]] = {
    "events_raw": ("org_id", "event_tracker_id"),
    "logs_script": ("org_id", "event_tracker_id"),
    "logs_router": ("org_id", "event_tracker_id", "route_group_id"),
    "logs_rule": ("org_id", "event_tracker_id", "business_rule_id"),
    "logs_capture": ("org_id", "event_tracker_id", "business_rule_id", "position"),
    "logs_trigger": (
        "org_id", "event_tracker_id", "business_rule_id", "action_id", "trigger_id", "attempt",
    ),
    "dlq": ("org_id", "event_tracker_id", "stage", "stream_seq"),
}  # fmt: skip
"""Each log table's sorting key (``ORDER BY`` in :mod:`~eventray.pipeline.storage.schema`,
checked by a test): one record per key after ``FINAL``."""

# filter -> column; a filter applies to the tables that have its column.
_FILTER_COLUMNS: dict[str, str] = {
    "asset_id": "asset_id",
    "business_rule_id": "business_rule_id",
    "rule_id": "rule_id",
    "action_id": "action_id",
    "trigger_id": "trigger_id",
    "data_source_id": "data_source_id",
    "route_group_id": "route_group_id",
    "stage": "stage",
    "success": "success",
    "matched": "matched",
}
# logs_script names its stage column failed_stage.
_RENAMED = {("logs_script", "stage"): "failed_stage"}
_DATE = DATE
_MAX_LIMIT = 10_000
_JSON_COLUMNS = {("logs_rule", "state_changes"), ("logs_rule", "trace"), ("logs_capture", "fields")}
_BOOL_COLUMNS = {"success", "matched"}
_BODIES = {"events_raw": ("body", "body_encoding"), "dlq": ("message", "message_encoding")}
_CAPTURE_MAPS = {
    bool: ("capture_bool", "UInt8"),
    float: ("capture_number", "Float64"),
    int: ("capture_number", "Float64"),
    str: ("capture_string", "String"),
    datetime: ("capture_date", _DATE),
}
_OPS = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _param_type(table: str, column: str) -> str:
    kind = dict(zip(columns_of(table), column_types(table), strict=True))[column]
    if kind.startswith("LowCardinality("):
        return kind[len("LowCardinality(") : -1]
    return kind


def _column(table: str, name: str) -> str:
    return _RENAMED.get((table, name), _FILTER_COLUMNS[name])


def _has_filter(table: str, name: str) -> bool:
    column = _column(table, name)
    if column not in columns_of(table):
        return False
    # logs_router's "matched" is the list of matched routers, not a flag.
    return name not in _BOOL_COLUMNS or _param_type(table, column) == "UInt8"


def log_columns(table: str) -> tuple[str, ...]:
    """The keys of a decoded row of ``table``: its columns, plus ``body_json`` (events_raw) or
    ``message_json`` (dlq), the body parsed when it is JSON text."""
    extra = (f"{_BODIES[table][0]}_json",) if table in _BODIES else ()
    return (*columns_of(table), *extra)


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Which rows of one log table (or the DLQ) to read.

    Args:
        table: one of :data:`LOG_KINDS`' tables.
        scope: the caller's scope; always applied.
        org_id: only this organization (``path_key`` also given: served more cheaply).
        path_key: that organization's pathKey; required with ``include_children``.
        include_children: the organization and everything below it (pathKey prefix).
        asset_id, business_rule_id, rule_id, action_id, trigger_id, data_source_id,
        route_group_id, stage: equality filters, each for the tables that have the column
            (``stage`` is ``failed_stage`` in logs_script).
        success: logs_trigger and logs_script. matched: logs_rule.
        errored: rows with (True) or without (False) an error message.
        since: ``created >= since``; until: ``created < until``.
        event_tracker_id: one event's rows.
        captures: typed capture-field filters (logs_capture only).
        limit: rows per page, 1..10000.
        cursor: ``next_cursor`` of the previous page of the same query.
        newest_first: descending ``created`` order.

    Raises:
        InvalidQuery: a filter the table does not have, a bad limit, a foreign cursor.
    """

    table: str
    scope: Scope
    org_id: str = ""
    path_key: str = ""
    include_children: bool = False
    asset_id: str | None = None
    business_rule_id: str | None = None
    rule_id: str | None = None
    action_id: str | None = None
    trigger_id: str | None = None
    data_source_id: str | None = None
    route_group_id: str | None = None
    stage: str | None = None
    success: bool | None = None
    matched: bool | None = None
    errored: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_tracker_id: str | None = None
    captures: tuple[CaptureFilter, ...] = ()
    limit: int = 100
    cursor: str | None = None
    newest_first: bool = False

    def __post_init__(self) -> None:
        if self.table not in SORT_KEYS:
            raise InvalidQuery(
                f"unknown log table {self.table!r}; one of {sorted(SORT_KEYS)}", param="table"
            )
        if not isinstance(self.scope, Scope):
            raise InvalidQuery("a log query needs the caller's scope", param="scope")
        if self.include_children and not self.path_key:
            raise InvalidQuery("include_children needs the organization's path_key", param="org")
        if isinstance(self.limit, bool) or not 1 <= self.limit <= _MAX_LIMIT:
            raise InvalidQuery(f"limit must be 1..{_MAX_LIMIT}, got {self.limit!r}", param="limit")
        columns = set(columns_of(self.table))
        for name in _FILTER_COLUMNS:
            if getattr(self, name) is not None and not _has_filter(self.table, name):
                raise InvalidQuery(
                    f"{_kind(self.table)} cannot be filtered by {name}; filters: "
                    f"{', '.join(_filters_of(self.table))}",
                    param=name,
                )
        if self.errored is not None and "error" not in columns:
            raise InvalidQuery(f"{_kind(self.table)} has no error to filter by", param="errored")
        if self.captures and self.table != "logs_capture":
            raise InvalidQuery("field filters (where) apply to captures only", param="where")
        for capture in self.captures:
            if type(capture.value) not in _CAPTURE_MAPS:
                raise InvalidQuery(f"capture value of unsupported type: {capture.value!r}")
        if self.cursor is not None:
            self._after()

    def _after(self) -> list[Any]:
        """The cursor's key values, checked against this query's table and order."""
        assert self.cursor is not None
        key = SORT_KEYS[self.table]
        try:
            value = orjson.loads(base64.urlsafe_b64decode(self.cursor.encode()))
        except (binascii.Error, orjson.JSONDecodeError, UnicodeEncodeError, ValueError):
            raise InvalidQuery(f"invalid cursor {self.cursor!r}", param="cursor") from None
        expected = [self.table, "desc" if self.newest_first else "asc"]
        if (
            not isinstance(value, list)
            or len(value) != 3 + len(key)
            or value[:2] != expected
            or not isinstance(value[2], str)
        ):
            raise InvalidQuery(
                f"invalid cursor {self.cursor!r} for this query (another table or order?)",
                param="cursor",
            )
        for column, part in zip(key, value[3:], strict=True):
            numeric = _param_type(self.table, column).startswith("UInt")
            if numeric != (isinstance(part, int) and not isinstance(part, bool)):
                raise InvalidQuery(f"invalid cursor {self.cursor!r}", param="cursor")
        return list(value[2:])


def _kind(table: str) -> str:
    return next(kind for kind, name in LOG_KINDS.items() if name == table)


def _filters_of(table: str) -> list[str]:
    columns = set(columns_of(table))
    names = [n for n in _FILTER_COLUMNS if _has_filter(table, n)]
    return [*names, *(["errored"] if "error" in columns else []), "org", "since", "until",
            "event_tracker_id", *(["where"] if table == "logs_capture" else [])]  # fmt: skip


def _encode_cursor(query: LogQuery, row: Mapping[str, Any]) -> str:
    key = [row["created"], *(row[c] for c in SORT_KEYS[query.table])]
    head = [query.table, "desc" if query.newest_first else "asc"]
    return base64.urlsafe_b64encode(orjson.dumps(head + key)).decode()


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of rows in the query's order; ``next_cursor`` is None on the last page."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def _capture_condition(index: int, capture: CaptureFilter) -> tuple[str, dict[str, Any]]:
    column, kind = _CAPTURE_MAPS[type(capture.value)]
    value = capture.value
    bound: Any = (
        int(value) if isinstance(value, bool)
        else format_ts(value) if isinstance(value, datetime)
        else float(value) if isinstance(value, (int, float))
        else value
    )  # fmt: skip
    tag = f"cap{index}"
    sql = (
        f"(rule_id IN {{{tag}_rules:Array(String)}} AND mapContains({column}, {{{tag}_name:String}}) "
        f"AND {column}[{{{tag}_name:String}}] {_OPS[capture.op]} {{{tag}_value:{kind}}})"
    )
    return sql, {f"{tag}_rules": list(capture.rule_ids), f"{tag}_name": capture.name,
                 f"{tag}_value": bound}  # fmt: skip


def build_log_query(
    query: LogQuery, *, database: str = DEFAULT_DATABASE
) -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` reading one page plus one row (to know whether more follow)."""
    table = query.table
    where: list[str] = []
    params: dict[str, Any] = {}
    scope_sql, scope_params = query.scope.condition()
    if scope_sql:
        where.append(scope_sql)
        params.update(scope_params)
    organizations(where, params, include_children=query.include_children,
                  org_id=query.org_id, path_key=query.path_key)  # fmt: skip
    for name in _FILTER_COLUMNS:
        value = getattr(query, name)
        if value is None:
            continue
        column = _column(table, name)
        kind = _param_type(table, column)
        where.append(f"{column} = {{f_{name}:{kind}}}")
        params[f"f_{name}"] = int(value) if isinstance(value, bool) else value
    if query.errored is not None:
        where.append("error != ''" if query.errored else "error = ''")
    time_range(where, params, query.since, query.until)
    if query.event_tracker_id is not None:
        where.append("event_tracker_id = {event_tracker_id:String}")
        params["event_tracker_id"] = query.event_tracker_id
    for index, capture in enumerate(query.captures):
        sql, bound = _capture_condition(index, capture)
        where.append(sql)
        params.update(bound)
    key = SORT_KEYS[table]
    direction = " DESC" if query.newest_first else ""
    if query.cursor is not None:
        after = query._after()
        names = ["after_created", *(f"after_{i}" for i in range(len(key)))]
        types = [_DATE, *(_param_type(table, c) for c in key)]
        bounds = ", ".join(f"{{{n}:{t}}}" for n, t in zip(names, types, strict=True))
        compare = "<" if query.newest_first else ">"
        # The created bound first, so the sorting key's time column can skip granules.
        where.append(
            f"created {compare}= {{after_created:{_DATE}}} AND "
            f"(created, {', '.join(key)}) {compare} ({bounds})"
        )
        params.update(zip(names, after, strict=True))
    params["limit"] = query.limit + 1
    order = ", ".join(f"{c}{direction}" for c in ("created", *key))
    sql = (
        f"SELECT {', '.join(columns_of(table))} FROM {check_identifier(database)}.{table} FINAL\n"
        f"WHERE {' AND '.join(where) or '1'}\n"
        f"ORDER BY {order}\n"
        "LIMIT {limit:UInt32}"
    )
    return sql, params


def _body_json(text: str, encoding: str) -> Any:
    if encoding != "text":
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def decode_log_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as Python values: integers as ints (64-bit ones arrive as text from some
    servers), 0/1 flags as bools, JSON text parsed ("" reads as None), and the raw body of
    events_raw/dlq also parsed into ``body_json``/``message_json`` when it is JSON text
    (``body_encoding`` ``base64`` marks a body that was not UTF-8; it stays base64)."""
    for column, kind in zip(columns_of(table), column_types(table), strict=True):
        value = row.get(column)
        if value is None:
            continue
        if column in _BOOL_COLUMNS and kind == "UInt8":
            row[column] = bool(int(value))
        elif kind.startswith("UInt"):
            row[column] = int(value)
        elif kind == "Array(UInt16)":
            row[column] = [int(v) for v in value]
        elif (table, column) in _JSON_COLUMNS:
            row[column] = orjson.loads(value) if value else None
    if table == "logs_capture":
        row["capture_bool"] = {k: bool(v) for k, v in row["capture_bool"].items()}
        row["capture_number"] = {k: float(v) for k, v in row["capture_number"].items()}
    if table in _BODIES:
        body, encoding = _BODIES[table]
        row[f"{body}_json"] = _body_json(row[body], row[encoding])
    return row


def query_logs(store: EventStore, query: LogQuery, *, database: str = DEFAULT_DATABASE) -> LogPage:
    """One page of ``query.table`` from any :class:`EventStore`."""
    sql, params = build_log_query(query, database=database)
    rows = store.select(sql, params)
    more = len(rows) > query.limit
    rows = [decode_log_row(query.table, row) for row in rows[: query.limit]]
    cursor = _encode_cursor(query, rows[-1]) if more and rows else None
    return LogPage(rows, cursor)
