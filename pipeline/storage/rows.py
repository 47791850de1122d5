"""A processed batch as rows of the stored tables (:mod:`eventray.pipeline.storage.schema`).

Rows are tuples in each table's DDL column order (:func:`columns_of`), built once per event and
handed to the event store as they are: the chDB adapter transposes them into Arrow columns, the
clickhouse-connect adapter into Native columns. No dict per row and no text encoding on the
way (building a dict per row and encoding it as ``JSONEachRow`` cost the pipeline ~8 us per
event, and chDB's JSON parsing another ~5 us per row).

Values are already in their column types: ``DateTime64`` columns hold epoch milliseconds
(ints), booleans are 0/1, JSON columns are text, EVA and capture maps are dicts. :func:`as_dicts`
gives the same rows as dicts with dates as UTC text, for tests and for reading them.

Times: ``events.created`` is the Standard Event's ``created``, so a redelivered event gets the
same sorting key and collapses with its first copy. Every other row of an event is stamped
with the time the event entered the platform (``Ingested.received_ms``) when known, else
with ``now``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.processor import Failure, Ingested, ProcessedBatch, ProcessedEvent
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.schema import DATE_COLUMNS, TABLES, columns_of

__all__ = [
    "Row",
    "RowContext",
    "Rows",
    "TriggerAttempt",
    "as_dicts",
    "batch_rows",
    "encode_body",
    "epoch_ms",
    "event_rows",
    "failure_rows",
    "format_ts",
    "json_each_row",
    "ms_from_iso",
    "parse_json_each_row",
    "refusal_row",
    "trigger_rows",
]

Row = tuple[Any, ...]
Rows = dict[str, list[Row]]
"""Rows per table; every table of :data:`TABLES` may be absent or empty."""

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
# DateTime64's range; a date outside it would make ClickHouse refuse the whole insert.
_MIN_MS = int(datetime(1900, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_MS = int(datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """``moment`` as epoch milliseconds (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def format_ts(moment: datetime | int) -> str:
    """UTC text with milliseconds (``2026-03-01 08:00:00.000``), the form ClickHouse prints;
    accepts a datetime (naive means UTC) or epoch milliseconds."""
    if isinstance(moment, int):
        moment = _EPOCH + moment * _MS
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(sep=" ", timespec="milliseconds")[:23]


def ms_from_iso(text: str) -> int | None:
    """ISO-8601 text (``Z`` or an offset; none means UTC) as epoch milliseconds, or None.

    Every date is parsed, never sliced: one malformed date from a user's template must cost
    that value, not make the server refuse the batch's whole insert.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    ms = epoch_ms(moment)
    return ms if _MIN_MS <= ms <= _MAX_MS else None


def encode_body(body: bytes) -> tuple[str, str]:
    """A raw message as column text: ``(text, "text")`` for UTF-8, else ``(base64, "base64")``.

    Bodies are usually JSON, but MQTT payloads and refused ingestions can be any bytes, and a
    String column can only hold valid UTF-8 losslessly.
    """
    try:
        return body.decode(), "text"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS).decode()


def json_each_row(rows: Sequence[Mapping[str, Any]], prefix: bytes = b"") -> bytes:
    """``rows`` as ``JSONEachRow`` text (one JSON object per line) after ``prefix``; the
    ClickHouse HTTP stand-in of the test kit and a few tools still speak it."""
    buffer = bytearray(prefix)
    dumps, option = orjson.dumps, _JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
    for row in rows:
        buffer += dumps(row, option=option)
    return bytes(buffer)


def parse_json_each_row(data: bytes) -> list[dict[str, Any]]:
    """Rows from ``JSONEachRow`` output, in one parse.

    ClickHouse escapes control characters inside JSON strings, so a raw newline only ever
    separates rows and the lines can be joined into one JSON array.
    """
    data = data.strip()
    if not data:
        return []
    parsed: list[dict[str, Any]] = orjson.loads(b"[" + data.replace(b"\n", b",") + b"]")
    return parsed


def as_dicts(rows: Rows) -> dict[str, list[dict[str, Any]]]:
    """``rows`` as column -> value dicts with dates as UTC text: for tests and reading."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table in TABLES:
        names = columns_of(table)
        dates = DATE_COLUMNS[table]
        converted = []
        for row in rows.get(table, ()):
            item = dict(zip(names, row, strict=True))
            for name in dates:
                value = item[name]
                item[name] = (
                    {k: format_ts(v) for k, v in value.items()}
                    if isinstance(value, dict)
                    else format_ts(value)
                )
            converted.append(item)
        out[table] = converted
    return out


@dataclass(frozen=True, slots=True)
class RowContext:
    """What rows need from the catalog, flattened once per catalog (not per event).

    Args:
        retention: days per organization and table.
        org_paths: pathKey per organization (failures carry only the org id).
        debug_assets: ids of assets with ``debugEnabled`` (their raw bodies are stored).
        asset_templates: template id per asset (failures carry only the asset id).
        capture_types: per rule id, the declared type of each capture field; only ``date``
            matters here, since a date capture arrives as ISO text like a text capture.
    """

    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    org_paths: Mapping[str, str] = field(default_factory=dict)
    debug_assets: frozenset[str] = frozenset()
    asset_templates: Mapping[str, str] = field(default_factory=dict)
    capture_types: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    log_detail: str = "errors"

    @classmethod
    def from_catalog(
        cls, catalog: Catalog, retention: RetentionPolicy, *, log_detail: str = "errors"
    ) -> RowContext:
        """The context for ``catalog``; build a new one when the catalog changes.

        ``log_detail="errors"`` (the seeds' default) keeps the per-event logs of
        ``logs_script`` and ``logs_router`` only for failures and for assets with
        ``debugEnabled``, and ``logs_rule`` only for evaluations that matched, changed state,
        ran actions, failed, or belong to a business rule with ``debug``; ``"all"`` keeps
        every record (several rows per event: expensive at volume).
        """
        if log_detail not in ("errors", "all"):
            raise ValueError(f"log_detail must be 'errors' or 'all', got {log_detail!r}")
        by_entity = catalog.org_retention_days()  # organizations' retentionDays win
        return cls(
            log_detail=log_detail,
            retention=retention.with_overrides(by_entity) if by_entity else retention,
            org_paths=catalog.org_paths,
            debug_assets=frozenset(a.id for a in catalog.assets.values() if a.debug_enabled),
            asset_templates={a.id: a.template_id for a in catalog.assets.values()},
            capture_types={
                rule.id: {c.name: c.type for c in rule.capture_fields}
                for rule in catalog.rules.values()
            },
        )


@dataclass(frozen=True, slots=True)
class TriggerAttempt:
    """One delivery attempt of an exec action to its trigger (a row of ``logs_trigger``)."""

    event_tracker_id: str
    org_id: str
    business_rule_id: str
    action_id: str
    trigger_id: str
    attempt: int
    success: bool
    duration_ms: int
    at: datetime
    request: str = ""
    response: str = ""
    error: str = ""


class _Builder:
    """Appends one batch's rows; one instance per batch (it caches per-batch lookups)."""

    __slots__ = ("context", "days", "detailed", "durations", "now_ms", "out")

    def __init__(
        self, context: RowContext, now_ms: int, durations: Mapping[str, int] | None
    ) -> None:
        self.context = context
        self.days = context.retention.days
        self.detailed = context.log_detail == "all"
        self.now_ms = now_ms
        self.durations = durations or {}
        self.out: Rows = {table: [] for table in TABLES}

    def event(self, ev: ProcessedEvent, item: Ingested | None) -> None:
        """Every row of one processed event (not its rule evaluations)."""
        out, days = self.out, self.days
        tid, org, path, asset = ev.event_tracker_id, ev.org_id, ev.path_key, ev.asset
        logged = item.received_ms if item is not None and item.received_ms else self.now_ms
        source = item.data_source_id if item is not None else ""
        if ev.routing.has("save_event"):
            event, eva = ev.event, ev.eva
            created = event.get("created")
            created_ms = ms_from_iso(created) if isinstance(created, str) else None
            out["events"].append((
                created_ms or logged, org, path, tid, days(org, "events"), asset.id,
                ev.template.id, str(event.get("eventType", "")), str(event.get("eventId", "")),
                source, _json(event.get("data", {})), _json(event.get("metadata") or {}),
                eva.number, eva.string, eva.bool, eva.date,
                ev.seq or 0,
            ))  # fmt: skip
        if asset.debug_enabled:
            body, encoding = encode_body(ev.body)
            out["events_raw"].append((
                logged, org, path, tid, days(org, "events_raw"), asset.id, source, "", "",
                body, encoding,
            ))  # fmt: skip
        if not (self.detailed or asset.debug_enabled):
            return  # success logs only for debug assets (the seeds' debugEnabled)
        out["logs_script"].append((
            logged, org, path, tid, days(org, "logs_script"), asset.id, ev.template.id, 1, "",
            self.durations.get(tid, 0), "", 0,
        ))  # fmt: skip
        router_days = days(org, "logs_router")
        for history in ev.routing.history:
            out["logs_router"].append((
                logged, org, path, tid, router_days, asset.id, history.route_group_id,
                history.version, history.evaluated, history.matched, history.dispatched,
                history.skipped or "",
            ))  # fmt: skip

    def failure(self, failure: Failure, item: Ingested | None, delivered: int) -> None:
        """The DLQ row of one failed event, its script log, and its raw body when kept."""
        out, days, context = self.out, self.days, self.context
        tid, org = failure.event_tracker_id, failure.org_id
        path = context.org_paths.get(org, "")
        logged = item.received_ms if item is not None and item.received_ms else self.now_ms
        source = item.data_source_id if item is not None else ""
        body, encoding = encode_body(failure.body)
        out["dlq"].append((
            logged, org, path, tid, days(org, "dlq"), failure.asset_id, source, failure.stage,
            failure.error, failure.line or 0, body, encoding, delivered, failure.seq or 0,
        ))  # fmt: skip
        out["logs_script"].append((
            logged, org, path, tid, days(org, "logs_script"), failure.asset_id,
            context.asset_templates.get(failure.asset_id, ""), 0, failure.stage,
            self.durations.get(tid, 0), failure.error, failure.line or 0,
        ))  # fmt: skip
        if failure.stage == "bind" or failure.asset_id in context.debug_assets:
            out["events_raw"].append((
                logged, org, path, tid, days(org, "events_raw"), failure.asset_id, source,
                failure.stage, failure.error, body, encoding,
            ))  # fmt: skip

    def rules(
        self, batch: ProcessedBatch, logged_at: Mapping[str, int], asset_of: Mapping[str, str]
    ) -> None:
        out, days, context = self.out, self.days, self.context
        rules, captures = out["logs_rule"], out["logs_capture"]
        for evaluation in batch.rules.evaluations:
            if not (
                self.detailed
                or evaluation.matched
                or evaluation.actions
                or evaluation.error
                or evaluation.state_changes
                or evaluation.trace is not None
            ):
                continue  # a rule that did nothing, without debug: not worth a row per event
            tid, org, path = evaluation.event_tracker_id, evaluation.org_id, evaluation.path_key
            logged = logged_at.get(tid, self.now_ms)
            asset_id = asset_of.get(tid, "")
            rules.append((
                logged, org, path, tid, days(org, "logs_rule"), asset_id,
                evaluation.business_rule_id, evaluation.rule_id, int(evaluation.matched),
                evaluation.actions, _json(evaluation.state_changes),
                _json(evaluation.trace) if evaluation.trace is not None else "",
                evaluation.error or "",
            ))  # fmt: skip
            if not evaluation.captures:
                continue
            types = context.capture_types.get(evaluation.rule_id, {})
            for position, capture in enumerate(evaluation.captures):
                number, string, boolean, date = _typed_captures(capture.fields, types)
                captures.append((
                    logged, org, path, tid, days(org, "logs_capture"), asset_id,
                    evaluation.business_rule_id, evaluation.rule_id, capture.action_id,
                    capture.name or "", position, _json(capture.fields), number, string,
                    boolean, date,
                ))  # fmt: skip


def batch_rows(
    batch: ProcessedBatch,
    context: RowContext,
    *,
    now: datetime,
    ingested: Sequence[Ingested] = (),
    deliveries: Mapping[str, int] | None = None,
    durations_us: Mapping[str, int] | None = None,
    triggers: Sequence[TriggerAttempt] = (),
) -> Rows:
    """Rows per table (every table present, possibly empty) for one processed batch.

    Args:
        batch: what :class:`eventray.pipeline.processor.EventProcessor` produced.
        context: catalog-derived lookups and the retention policy.
        now: when the batch was processed; stamps log rows whose ingestion time is unknown.
        ingested: the batch as pulled from the stream: ingestion times and data sources.
        deliveries: delivery count per event tracker id (1 when absent); by default each
            ingested item's own count.
        durations_us: script time per event tracker id, when the executor measured it.
        triggers: trigger delivery attempts to log with the batch.

    ``events`` gets only events whose routing dispatched ``save_event`` (its ``source`` is the
    data source that ingested the event, known from ``ingested``); ``events_raw`` the bodies
    of debug assets' events and of events refused at ``bind``, with the reason;
    ``logs_script`` one row per failed event (and per event with ``log_detail="all"`` or a
    debug asset); ``dlq`` every failure.
    """
    builder = _Builder(context, epoch_ms(now), durations_us)
    received = {item.event_tracker_id: item for item in ingested}
    logged_at: dict[str, int] = {}
    asset_of: dict[str, str] = {}
    for ev in batch.events:
        item = received.get(ev.event_tracker_id)
        builder.event(ev, item)
        logged_at[ev.event_tracker_id] = (
            item.received_ms if item is not None and item.received_ms else builder.now_ms
        )
        asset_of[ev.event_tracker_id] = ev.asset.id
    for failure in batch.failures:
        item = received.get(failure.event_tracker_id)
        if deliveries is not None:
            delivered = deliveries.get(failure.event_tracker_id, 1)
        else:
            delivered = item.delivered if item is not None else 1
        builder.failure(failure, item, delivered)
    builder.rules(batch, logged_at, asset_of)
    if triggers:
        builder.out["logs_trigger"] = trigger_rows(triggers, context)
    return builder.out


def event_rows(
    batch: ProcessedBatch, context: RowContext, *, now: datetime, ingested: Sequence[Ingested]
) -> Rows:
    """:func:`batch_rows` for a pipeline batch (delivery counts from the ingested items)."""
    return batch_rows(batch, context, now=now, ingested=ingested)


def failure_rows(
    failures: Sequence[Failure], context: RowContext, *, now: datetime, ingested: Sequence[Ingested]
) -> Rows:
    """The rows of events sent to the DLQ outside a processed batch (e.g. by narrowing)."""
    return batch_rows(ProcessedBatch(failures=list(failures)), context, now=now, ingested=ingested)


def _typed_captures(
    fields: Mapping[str, Any], types: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, str], dict[str, int], dict[str, int]]:
    """Capture values sorted into the typed maps; a None (missing) value goes nowhere."""
    number: dict[str, float] = {}
    string: dict[str, str] = {}
    boolean: dict[str, int] = {}
    date: dict[str, int] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, bool):
            boolean[name] = int(value)
        elif isinstance(value, (int, float)):
            number[name] = float(value)
        elif isinstance(value, datetime):
            date[name] = epoch_ms(value)
        elif isinstance(value, str):
            ms = ms_from_iso(value) if types.get(name) == "date" else None
            if ms is not None:
                date[name] = ms
            else:
                string[name] = value
        else:
            string[name] = _json(value)
    return number, string, boolean, date


def trigger_rows(attempts: Sequence[TriggerAttempt], context: RowContext) -> list[Row]:
    """Rows of ``logs_trigger``: one per delivery attempt."""
    days = context.retention.days
    rows: list[Row] = []
    for a in attempts:
        rows.append((
            epoch_ms(a.at), a.org_id, context.org_paths.get(a.org_id, ""), a.event_tracker_id,
            days(a.org_id, "logs_trigger"), a.business_rule_id, a.action_id, a.trigger_id,
            a.attempt, int(a.success), a.duration_ms, a.request, a.response, a.error,
        ))  # fmt: skip
    return rows


def refusal_row(
    *,
    event_tracker_id: str,
    org_id: str,
    data_source_id: str,
    body: bytes,
    reason: str,
    at: datetime,
    context: RowContext,
    stage: str = "auth",
) -> Row:
    """The ``events_raw`` row of an ingestion refused at the ingress (e.g. failed auth), which
    never reaches the stream: the attempt is kept with its reason."""
    text, encoding = encode_body(body)
    return (
        epoch_ms(at), org_id, context.org_paths.get(org_id, ""), event_tracker_id,
        context.retention.days(org_id, "events_raw"), "", data_source_id, stage, reason, text,
        encoding,
    )  # fmt: skip
