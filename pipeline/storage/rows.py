"""A processed batch as rows of the stored tables (:mod:`pipeline.storage.schema`).

Pure functions over plain dicts: this runs for every event of every batch, so rows are built
as dict literals (no pydantic, no per-row classes) and JSON columns are encoded with orjson.
Values are already in the form ClickHouse reads from ``JSONEachRow``: dates as UTC text
``2026-03-01 08:00:00.000`` (:func:`format_ts`), booleans as 0/1, JSON columns as text. EVA
maps keep their integer keys; :func:`json_each_row` (the bytes both adapters send) writes
them as JSON object keys.

Times: ``events.created`` is the Standard Event's ``created``, so a redelivered event gets the
same sorting key and collapses with its first copy. Every other row of an event is stamped
with the time the event entered the platform (``Ingested.received_at``) when the ingested batch
is given, else with ``now``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.processor import Ingested, ProcessedBatch
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.schema import TABLES

__all__ = [
    "Row",
    "RowContext",
    "TriggerAttempt",
    "batch_rows",
    "encode_body",
    "format_ts",
    "json_each_row",
    "parse_json_each_row",
    "refusal_row",
    "trigger_rows",
    "ts_from_iso",
]

Row = dict[str, Any]

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
# DateTime64's range; a date outside it would make ClickHouse refuse the whole insert.
_MIN_YEAR, _MAX_YEAR = 1900, 2299


def format_ts(moment: datetime) -> str:
    """``moment`` as the UTC text every date column is written with (naive means UTC)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(sep=" ", timespec="milliseconds")[:23]


def ts_from_iso(text: str) -> str | None:
    """ISO-8601 text (``Z`` or an offset; none means UTC) as :func:`format_ts` text, or None.

    Every date is parsed, never sliced: one malformed date from a user's template must cost
    that value, not make the server refuse the batch's whole insert.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if not _MIN_YEAR <= moment.year <= _MAX_YEAR:
        return None
    return format_ts(moment)


def encode_body(body: bytes) -> tuple[str, str]:
    """A raw message as column text: ``(text, "text")`` for UTF-8, else ``(base64, "base64")``.

    Bodies are usually JSON, but MQTT payloads and refused ingestions can be any bytes, and a
    String column fed from JSON text can only hold valid UTF-8 losslessly.
    """
    try:
        return body.decode(), "text"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS).decode()


def json_each_row(rows: Sequence[Mapping[str, Any]], prefix: bytes = b"") -> bytes:
    """``rows`` as ``JSONEachRow`` text (one JSON object per line) after ``prefix``.

    Both event-store adapters send exactly these bytes. Each row is appended to one buffer as
    soon as it is encoded: keeping 10,000 small ``bytes`` alive to join them later measured
    3-8x slower here (fresh allocations per row), and the single-array form
    ``[{...},{...}]`` that ClickHouse also accepts parses ~4x slower in chDB.
    """
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
        return cls(
            log_detail=log_detail,
            retention=retention,
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


def _received(item: Ingested | None, fallback: str) -> str:
    if item is None:
        return fallback
    return ts_from_iso(item.received_at) or fallback


def _dates(values: dict[int, str]) -> dict[int, str]:
    if not values:
        return values
    out: dict[int, str] = {}
    for key, text in values.items():
        ts = ts_from_iso(text)
        if ts is not None:
            out[key] = ts
    return out


def batch_rows(
    batch: ProcessedBatch,
    context: RowContext,
    *,
    now: datetime,
    ingested: Sequence[Ingested] = (),
    deliveries: Mapping[str, int] | None = None,
    durations_us: Mapping[str, int] | None = None,
    triggers: Sequence[TriggerAttempt] = (),
) -> dict[str, list[Row]]:
    """Rows per table (every table present, possibly empty) for one processed batch.

    Args:
        batch: what :class:`pipeline.processor.EventProcessor` produced.
        context: catalog-derived lookups and the retention policy.
        now: when the batch was processed; stamps log rows whose ingestion time is unknown.
        ingested: the batch as pulled from the stream: ingestion times and data sources.
        deliveries: JetStream delivery count per event tracker id (1 when absent).
        durations_us: script time per event tracker id, when the executor measured it.
        triggers: trigger delivery attempts to log with the batch.

    ``events`` gets only events whose routing dispatched ``save_event`` (its ``source`` is the
    data source that ingested the event, known from ``ingested``); ``events_raw`` the bodies
    of debug assets' events and of events refused at ``bind``, with the reason;
    ``logs_script`` one row per event, processed or failed; ``dlq`` every failure.
    """
    out: dict[str, list[Row]] = {table: [] for table in TABLES}
    events, raw, scripts = out["events"], out["events_raw"], out["logs_script"]
    routers, dlq = out["logs_router"], out["dlq"]
    days = context.retention.days
    now_ts = format_ts(now)
    received = {item.event_tracker_id: item for item in ingested}
    durations = durations_us or {}
    logged_at: dict[str, str] = {}
    asset_of: dict[str, str] = {}
    detailed = context.log_detail == "all"

    for ev in batch.events:
        tid, org, path, asset = ev.event_tracker_id, ev.org_id, ev.path_key, ev.asset
        item = received.get(tid)
        logged = _received(item, now_ts)
        asset_of_id = asset.id
        logged_at[tid] = logged
        asset_of[tid] = asset_of_id
        if ev.routing.has("save_event"):
            event, eva = ev.event, ev.eva
            created = event.get("created")
            events.append({
                "created": (ts_from_iso(created) if isinstance(created, str) else None) or logged,
                "org_id": org,
                "path_key": path,
                "event_tracker_id": tid,
                "retention_days": days(org, "events"),
                "asset_id": asset_of_id,
                "template_id": ev.template.id,
                "event_type": str(event.get("eventType", "")),
                "event_id": str(event.get("eventId", "")),
                "source": item.data_source_id if item is not None else "",
                "payload": _json(event.get("data", {})),
                "metadata": _json(event.get("metadata") or {}),
                "eva_number": eva.number,
                "eva_string": eva.string,
                "eva_bool": eva.bool,
                "eva_date": _dates(eva.date),
                "stream_seq": ev.seq or 0,
            })  # fmt: skip
        if asset.debug_enabled:
            body, encoding = encode_body(ev.body)
            raw.append({
                "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
                "retention_days": days(org, "events_raw"), "asset_id": asset_of_id,
                "data_source_id": item.data_source_id if item is not None else "",
                "stage": "", "reason": "", "body": body, "body_encoding": encoding,
            })  # fmt: skip
        if not (detailed or asset.debug_enabled):
            continue  # success logs only for debug assets (the seeds' debugEnabled)
        scripts.append({
            "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
            "retention_days": days(org, "logs_script"), "asset_id": asset_of_id,
            "template_id": ev.template.id, "success": 1, "failed_stage": "",
            "duration_us": durations.get(tid, 0), "error": "", "error_line": 0,
        })  # fmt: skip
        router_days = days(org, "logs_router")
        for history in ev.routing.history:
            routers.append({
                "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
                "retention_days": router_days, "asset_id": asset_of_id,
                "route_group_id": history.route_group_id, "version": history.version,
                "evaluated": history.evaluated, "matched": history.matched,
                "dispatched": history.dispatched, "skipped": history.skipped or "",
            })  # fmt: skip

    for failure in batch.failures:
        tid, org = failure.event_tracker_id, failure.org_id
        path = context.org_paths.get(org, "")
        item = received.get(tid)
        logged = _received(item, now_ts)
        source = item.data_source_id if item is not None else ""
        body, encoding = encode_body(failure.body)
        dlq.append({
            "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
            "retention_days": days(org, "dlq"), "asset_id": failure.asset_id,
            "data_source_id": source, "stage": failure.stage, "error": failure.error,
            "error_line": failure.line or 0, "message": body, "message_encoding": encoding,
            "deliveries": deliveries.get(tid, 1) if deliveries else 1,
            "stream_seq": failure.seq or 0,
        })  # fmt: skip
        scripts.append({
            "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
            "retention_days": days(org, "logs_script"), "asset_id": failure.asset_id,
            "template_id": context.asset_templates.get(failure.asset_id, ""), "success": 0,
            "failed_stage": failure.stage, "duration_us": durations.get(tid, 0),
            "error": failure.error, "error_line": failure.line or 0,
        })  # fmt: skip
        if failure.stage == "bind" or failure.asset_id in context.debug_assets:
            raw.append({
                "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
                "retention_days": days(org, "events_raw"), "asset_id": failure.asset_id,
                "data_source_id": source, "stage": failure.stage, "reason": failure.error,
                "body": body, "body_encoding": encoding,
            })  # fmt: skip

    _rule_rows(batch, context, out, logged_at, asset_of, now_ts)
    if triggers:
        out["logs_trigger"] = trigger_rows(triggers, context)
    return out


def _rule_rows(
    batch: ProcessedBatch,
    context: RowContext,
    out: dict[str, list[Row]],
    logged_at: Mapping[str, str],
    asset_of: Mapping[str, str],
    now_ts: str,
) -> None:
    rules, captures = out["logs_rule"], out["logs_capture"]
    days = context.retention.days
    detailed = context.log_detail == "all"
    for evaluation in batch.rules.evaluations:
        if not (
            detailed
            or evaluation.matched
            or evaluation.actions
            or evaluation.error
            or evaluation.state_changes
            or evaluation.trace is not None
        ):
            continue  # a rule that did nothing, without debug: not worth a row per event
        tid, org, path = evaluation.event_tracker_id, evaluation.org_id, evaluation.path_key
        logged = logged_at.get(tid, now_ts)
        asset_id = asset_of.get(tid, "")
        rules.append({
            "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
            "retention_days": days(org, "logs_rule"), "asset_id": asset_id,
            "business_rule_id": evaluation.business_rule_id, "rule_id": evaluation.rule_id,
            "matched": int(evaluation.matched), "actions": evaluation.actions,
            "state_changes": _json(evaluation.state_changes),
            "trace": _json(evaluation.trace) if evaluation.trace is not None else "",
            "error": evaluation.error or "",
        })  # fmt: skip
        if not evaluation.captures:
            continue
        types = context.capture_types.get(evaluation.rule_id, {})
        for position, capture in enumerate(evaluation.captures):
            number, string, boolean, date = _typed_captures(capture.fields, types)
            captures.append({
                "created": logged, "org_id": org, "path_key": path, "event_tracker_id": tid,
                "retention_days": days(org, "logs_capture"), "asset_id": asset_id,
                "business_rule_id": evaluation.business_rule_id,
                "rule_id": evaluation.rule_id, "action_id": capture.action_id,
                "name": capture.name or "", "position": position,
                "fields": _json(capture.fields), "capture_number": number,
                "capture_string": string, "capture_bool": boolean, "capture_date": date,
            })  # fmt: skip


def _typed_captures(
    fields: Mapping[str, Any], types: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, str], dict[str, int], dict[str, str]]:
    """Capture values sorted into the typed maps; a None (missing) value goes nowhere."""
    number: dict[str, float] = {}
    string: dict[str, str] = {}
    boolean: dict[str, int] = {}
    date: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, bool):
            boolean[name] = int(value)
        elif isinstance(value, (int, float)):
            number[name] = float(value)
        elif isinstance(value, datetime):
            date[name] = format_ts(value)
        elif isinstance(value, str):
            ts = ts_from_iso(value) if types.get(name) == "date" else None
            if ts is not None:
                date[name] = ts
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
        rows.append({
            "created": format_ts(a.at), "org_id": a.org_id,
            "path_key": context.org_paths.get(a.org_id, ""),
            "event_tracker_id": a.event_tracker_id,
            "retention_days": days(a.org_id, "logs_trigger"),
            "business_rule_id": a.business_rule_id, "action_id": a.action_id,
            "trigger_id": a.trigger_id, "attempt": a.attempt, "success": int(a.success),
            "duration_ms": a.duration_ms, "request": a.request, "response": a.response,
            "error": a.error,
        })  # fmt: skip
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
    return {
        "created": format_ts(at), "org_id": org_id,
        "path_key": context.org_paths.get(org_id, ""), "event_tracker_id": event_tracker_id,
        "retention_days": context.retention.days(org_id, "events_raw"), "asset_id": "",
        "data_source_id": data_source_id, "stage": stage, "reason": reason, "body": text,
        "body_encoding": encoding,
    }  # fmt: skip
