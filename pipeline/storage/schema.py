"""The stored tables: one DDL, run unchanged by ClickHouse and by chDB.

Both event-store adapters create their tables from :func:`ddl_statements`, so the embedded
store and the production server can never drift apart.

Choices, and why:

- **Effectively-once rows.** Delivery is at-least-once: JetStream redelivers a batch that was
  not acknowledged, and the batch is then written again. Every table is a
  ``ReplacingMergeTree`` whose sorting key identifies one record (it ends in
  ``event_tracker_id`` plus, for the logs, what tells records of one event apart: the route
  group, the business rule, the capture's position, the trigger attempt), so two writes of
  the same record collapse into one on merge. Merges are asynchronous, so readers add
  ``FINAL`` (see :mod:`pipeline.storage.query`) and never see a duplicate in between.
  Nothing in a sorting key depends on when the row was written: ``events`` sorts by the
  Standard Event's own ``created`` (derived from the payload, so a redelivery yields the same
  value), the other tables by organization and tracker id only.
- **Sorting.** ``events`` is sorted by ``(path_key, created, event_tracker_id)``: one
  organization is an exact ``path_key`` and an organization with its children is a
  ``path_key`` prefix, both served by the primary index, and pages come out in
  ``(created, event_tracker_id)`` order, the keyset the query builder paginates on. Logs are
  read per event (traceability by eventTrackerId), hence ``(org_id, event_tracker_id, ...)``.
- **dlq** keeps one row per event, failing stage (an event can fail at one trigger and at
  another: ``trigger:<id>`` stages) and stream message (``stream_seq``: a redelivery of the same
  message collapses into its row, a redriven copy that fails again is a row of its own, so the
  failures of an event stay visible); its version column is ``deliveries``, so the row that
  survives the merge carries the highest delivery count.
- **dlq_redrive** records each DLQ entry (or ``events_raw`` refusal) that was redriven: which
  entry (``source``, ``stage``, ``entry_seq``), by which redrive, into which stream message.
  An entry with a record is never redriven again (see :mod:`eventray.pipeline.replay`).
- **Retention.** Each row carries ``retention_days`` (per organization and table, see
  :mod:`pipeline.storage.retention`) and the row TTL is
  ``toDateTime(created) + toIntervalDay(retention_days)``. ``created + ...`` on the
  ``DateTime64`` column is accepted by chDB but refused by ClickHouse before 25.7 (a TTL had
  to be a Date or DateTime), and 24.8/25.3 LTS servers are common: the cast costs nothing
  and works everywhere.
- **Time zone.** ``created`` is ``DateTime64(3, 'UTC')``: rows carry UTC text
  (``2026-03-01 08:00:00.000``) and a server configured for another zone would otherwise
  read that text in its own zone.
- **JSON as String.** ``payload``, ``metadata``, traces and state changes are JSON text in
  ``String`` columns: the ``JSON`` column type is new (GA in 25.3), its inference and
  on-disk form changed between versions, and text is portable across every chDB and
  ClickHouse version while ``JSONExtract*`` still queries it. The typed maps are what fast
  queries use.
- **Capture fields** are keyed by name (a Log action's capture field), so ``logs_capture``
  has ``Map(String, ...)`` maps, typed like the EVA maps.
"""

from __future__ import annotations

import re

__all__ = [
    "DATE_COLUMNS",
    "DEFAULT_DATABASE",
    "TABLES",
    "check_identifier",
    "column_types",
    "columns_of",
    "ddl_statements",
    "table_ddl",
]

DEFAULT_DATABASE = "eventray"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# Every table starts with these: where the row belongs and how long it is kept.
_COMMON = (
    ("created", "DateTime64(3, 'UTC')"),
    ("org_id", "LowCardinality(String)"),
    ("path_key", "String"),
    ("event_tracker_id", "String"),
    ("retention_days", "UInt16"),
)

_DATE = "DateTime64(3, 'UTC')"

# table -> (extra columns, engine, partition key or "", sorting key)
_TABLES: dict[str, tuple[tuple[tuple[str, str], ...], str, str, str]] = {
    "events": (
        (
            ("asset_id", "String"),
            ("template_id", "LowCardinality(String)"),
            ("event_type", "LowCardinality(String)"),
            ("event_id", "String"),
            ("source", "LowCardinality(String)"),
            ("payload", "String"),
            ("metadata", "String"),
            ("eva_number", "Map(UInt16, Float64)"),
            ("eva_string", "Map(UInt16, String)"),
            ("eva_bool", "Map(UInt16, UInt8)"),
            ("eva_date", f"Map(UInt16, {_DATE})"),
            ("stream_seq", "UInt64"),
        ),
        "ReplacingMergeTree",
        "toYYYYMM(created)",
        "path_key, created, event_tracker_id",
    ),
    "events_raw": (
        (
            ("asset_id", "String"),
            ("data_source_id", "LowCardinality(String)"),
            ("stage", "LowCardinality(String)"),
            ("reason", "String"),
            ("body", "String"),
            ("body_encoding", "LowCardinality(String)"),
        ),
        "ReplacingMergeTree",
        "",
        "org_id, event_tracker_id",
    ),
    "logs_script": (
        (
            ("asset_id", "String"),
            ("template_id", "LowCardinality(String)"),
            ("success", "UInt8"),
            ("failed_stage", "LowCardinality(String)"),
            ("duration_us", "UInt64"),
            ("error", "String"),
            ("error_line", "UInt32"),
        ),
        "ReplacingMergeTree",
        "",
        "org_id, event_tracker_id",
    ),
    "logs_router": (
        (
            ("asset_id", "String"),
            ("route_group_id", "String"),
            ("version", "UInt32"),
            ("evaluated", "UInt16"),
            ("matched", "Array(UInt16)"),
            ("dispatched", "Array(LowCardinality(String))"),
            ("skipped", "String"),
        ),
        "ReplacingMergeTree",
        "",
        "org_id, event_tracker_id, route_group_id",
    ),
    "logs_rule": (
        (
            ("asset_id", "String"),
            ("business_rule_id", "String"),
            ("rule_id", "String"),
            ("matched", "UInt8"),
            ("actions", "Array(String)"),
            ("state_changes", "String"),
            ("trace", "String"),
            ("error", "String"),
        ),
        "ReplacingMergeTree",
        "",
        "org_id, event_tracker_id, business_rule_id",
    ),
    "logs_capture": (
        (
            ("asset_id", "String"),
            ("business_rule_id", "String"),
            ("rule_id", "String"),
            ("action_id", "String"),
            ("name", "String"),
            ("position", "UInt16"),
            ("fields", "String"),
            ("capture_number", "Map(String, Float64)"),
            ("capture_string", "Map(String, String)"),
            ("capture_bool", "Map(String, UInt8)"),
            ("capture_date", f"Map(String, {_DATE})"),
        ),
        "ReplacingMergeTree",
        "",
        "org_id, event_tracker_id, business_rule_id, position",
    ),
    "logs_trigger": (
        (
            ("business_rule_id", "String"),
            ("action_id", "String"),
            ("trigger_id", "String"),
            ("attempt", "UInt16"),
            ("success", "UInt8"),
            ("duration_ms", "UInt32"),
            ("request", "String"),
            ("response", "String"),
            ("error", "String"),
        ),
        "ReplacingMergeTree",
        "",
        "org_id, event_tracker_id, business_rule_id, action_id, trigger_id, attempt",
    ),
    "dlq": (
        (
            ("asset_id", "String"),
            ("data_source_id", "LowCardinality(String)"),
            ("stage", "LowCardinality(String)"),
            ("error", "String"),
            ("error_line", "UInt32"),
            ("message", "String"),
            ("message_encoding", "LowCardinality(String)"),
            ("deliveries", "UInt32"),
            ("stream_seq", "UInt64"),
        ),
        "ReplacingMergeTree(deliveries)",
        "",
        "org_id, event_tracker_id, stage, stream_seq",
    ),
    "dlq_redrive": (
        (
            ("source", "LowCardinality(String)"),
            ("stage", "LowCardinality(String)"),
            ("entry_seq", "UInt64"),
            ("entry_created", _DATE),
            ("error", "String"),
            ("redrive_id", "String"),
            ("requested_by", "String"),
            ("msg_id", "String"),
            ("partition", "Int32"),
            ("stream_seq", "UInt64"),
        ),
        "ReplacingMergeTree",
        "",
        "org_id, event_tracker_id, source, stage, entry_seq",
    ),
}

TABLES: tuple[str, ...] = tuple(_TABLES)
"""Every stored table, in creation order."""

DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    table: tuple(
        name
        for name, kind in (*_COMMON, *extra)
        if kind.startswith("DateTime64") or kind.endswith(f"{_DATE})")
    )
    for table, (extra, *_rest) in _TABLES.items()
}
"""Per table, the columns holding dates (``DateTime64`` or maps of them): rows carry them as
epoch milliseconds, the one form Arrow, Native and JSON readers all take without parsing."""

TTL = "toDateTime(created) + toIntervalDay(retention_days)"


def check_identifier(name: str) -> str:
    """``name`` if it is a plain ClickHouse identifier, else ValueError.

    Database and table names cannot be query parameters, so they are checked instead: only
    letters, digits and underscores ever reach a statement.
    """
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


def columns_of(table: str) -> tuple[str, ...]:
    """The column names of ``table``, in DDL order."""
    extra = _TABLES[table][0]
    return tuple(name for name, _ in (*_COMMON, *extra))


def column_types(table: str) -> tuple[str, ...]:
    """The ClickHouse types of ``table``'s columns, in DDL order."""
    extra = _TABLES[table][0]
    return tuple(kind for _, kind in (*_COMMON, *extra))


def table_ddl(table: str, database: str = DEFAULT_DATABASE) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for one table of :data:`TABLES`."""
    extra, engine, partition, order_by = _TABLES[table]
    columns = ",\n".join(f"    {name} {kind}" for name, kind in (*_COMMON, *extra))
    lines = [
        f"CREATE TABLE IF NOT EXISTS {check_identifier(database)}.{table}\n(\n{columns}\n)",
        f"ENGINE = {engine}",
    ]
    if partition:
        lines.append(f"PARTITION BY {partition}")
    lines += [f"ORDER BY ({order_by})", f"TTL {TTL}"]
    return "\n".join(lines)


def ddl_statements(database: str = DEFAULT_DATABASE) -> list[str]:
    """Every statement that creates the database and its tables; each is idempotent."""
    check_identifier(database)
    return [f"CREATE DATABASE IF NOT EXISTS {database}"] + [
        table_ddl(table, database) for table in TABLES
    ]
