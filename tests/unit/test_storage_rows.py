"""Rows of the stored tables (pipeline/storage/rows.py) from a batch the real processor made.

The sample batch runs the sample tenant through the real EventProcessor (QuickJS templates,
the unmodified EM300-TH and WS301 codecs, route groups, the three business rules): handcrafted
uplinks with known values plus simulated traffic. The event-store contract suite
(tests/integration/test_event_store_contract.py) stores this same batch.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.catalog import Catalog, load_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.processor import EventProcessor, Ingested, ProcessedBatch
from eventray.pipeline.routing import Dispatch, RoutingResult
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.pipeline.storage.retention import DEFAULT_DAYS, RetentionPolicy
from eventray.pipeline.storage.rows import (
    RowContext,
    TriggerAttempt,
    as_dicts,
    batch_rows,
    encode_body,
    format_ts,
    ms_from_iso,
    refusal_row,
)
from eventray.pipeline.storage.schema import TABLES, columns_of
from eventray.testing.simulator import DeviceSimulator

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"
GATEWAY = Path(__file__).resolve().parents[2] / "config" / "samples" / "inputs"
NOW = datetime(2026, 3, 1, 8, 5, tzinfo=UTC)
ROOM1 = "0001/0001/0001/0001/0001/0001"  # alpha-cold-room-1
ROOM2 = "0001/0001/0001/0001/0001/0002"  # alpha-cold-room-2
FACTORY = "0001/0001/0001"  # factory-alpha
DEPOT = "0001/0001/0002"  # depot-beta
# The sample's rows are dated March 2026: long retention keeps a server's TTL from deleting
# them while the tests read them.
RETENTION = RetentionPolicy(
    defaults=dict.fromkeys(TABLES, 3650),
    overrides={
        "alpha-cold-room-2": {"events": 4000, "logs_rule": 5000},
        "factory-alpha": {"dlq": 4500},
    },
)
DELIVERIES = {"t2": 3}
DURATIONS = {"t0": 125}
SIMULATED = 42


def _em300(temperature_tenths: int, humidity_halves: int, battery: int) -> bytes:
    raw = temperature_tenths & 0xFFFF
    return bytes([0x01, 0x75, battery, 0x03, 0x67, raw & 0xFF, raw >> 8, 0x04, 0x68,
                  humidity_halves])  # fmt: skip


def _webhook(dev_eui: str, received: str, frame: bytes, correlation: str | None) -> bytes:
    body: dict[str, Any] = {
        "end_device_ids": {"device_id": "x", "dev_eui": dev_eui},
        "received_at": received,
        "uplink_message": {"f_port": 85, "frm_payload": base64.b64encode(frame).decode()},
    }
    if correlation:
        body["correlation_ids"] = [correlation]
    return orjson.dumps(body)


def _ms(text: str) -> int:
    found = ms_from_iso(text)
    assert found is not None
    return found


def handcrafted() -> list[Ingested]:
    """Uplinks with known outcomes (t0..t8)."""
    gateway = (GATEWAY / "freezer-gateway.jsonl").read_bytes().splitlines()
    items = [
        Ingested(f"t{i}", "ds-gateway-http", body, _ms(f"2026-03-01T08:0{i}:30+00:00"), i + 1)
        for i, body in enumerate(gateway)
    ]  # t0 freezer-01 ok, t1 freezer-01 door open (F), t2 and t3 freezer-02 invalid
    items += [
        Ingested("t4", "ds-ttn-webhook", _webhook("24E124136B316241", "2026-03-01T08:03:00Z",
                 _em300(-141, 100, 90), "as:up:000000000001"), _ms("2026-03-01T08:04:00Z"), 5),
        Ingested("t5", "ds-gateway-http", b'{"deviceId": "NOPE"}', _ms("2026-03-01T08:04:30Z"), 6),
        Ingested("t6", "ds-gateway-http", b"\xff\xfe", _ms("2026-03-01T08:04:40Z"), 7),
        Ingested("t7", "ds-gateway-http", orjson.dumps(
            {"deviceId": "FRZ-0003", "ts": "2026-03-01T08:02:00Z", "readings": {"t": -12.5, "rh": 50},
             "door": "closed", "batt": 70}), _ms("2026-03-01T08:04:50Z"), 8),
        Ingested("t8", "ds-ttn-webhook", _webhook("24E124141C147062", "2026-03-01T08:04:00Z",
                 bytes([0x01, 0x75, 95, 0x03, 0x00, 0x01]), None), _ms("2026-03-01T08:04:55Z"), 9),
    ]  # fmt: skip
    return items


@dataclass(frozen=True)
class Sample:
    catalog: Catalog
    items: list[Ingested]
    batch: ProcessedBatch
    context: RowContext
    triggers: tuple[TriggerAttempt, ...]

    def tuples(self) -> dict[str, list[tuple[Any, ...]]]:
        """The rows as the pipeline hands them to a store (tuples, dates in milliseconds)."""
        return batch_rows(
            self.batch, self.context, now=NOW, ingested=self.items, deliveries=DELIVERIES,
            durations_us=DURATIONS, triggers=self.triggers,
        )  # fmt: skip

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Fresh rows as dicts with dates as text (callers may mutate them)."""
        return as_dicts(self.tuples())


@functools.cache
def sample() -> Sample:
    """The sample tenant's batch, processed once per test session."""
    catalog = load_catalog([TENANT])
    simulator = DeviceSimulator(catalog, bad_ratio=0.0)
    items = handcrafted()
    for index, uplink in enumerate(simulator.take(SIMULATED)):
        received = int(simulator.now.timestamp() * 1000)
        items.append(Ingested(f"sim-{index:04d}", uplink.data_source_id, uplink.body, received,
                              100 + index))  # fmt: skip
    processor = EventProcessor(
        catalog,
        TemplateExecutor(ScriptCache()),
        RuleEngine(catalog.rule_set(), MemoryStateStore(), clock=ManualClock(NOW)),
    )
    batch = processor.process(items)
    triggers = (
        TriggerAttempt("t1", "alpha-cold-room-1", "factory-alpha-high-temp", "notify", "slack-ops",
                       1, False, 120, NOW + timedelta(seconds=1), '{"text": "Alert #1"}', "",
                       "HTTP 503 from slack: it's \\ down"),
        TriggerAttempt("t1", "alpha-cold-room-1", "factory-alpha-high-temp", "notify", "slack-ops",
                       2, True, 80, NOW + timedelta(seconds=3), '{"text": "Alert #1"}', "ok"),
    )  # fmt: skip
    return Sample(
        catalog,
        items,
        batch,
        RowContext.from_catalog(catalog, RETENTION, log_detail="all"),
        triggers,
    )


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict[str, Any]]]:
    return sample().rows()


def by_tracker(rows: list[dict[str, Any]], tracker: str) -> list[dict[str, Any]]:
    return [row for row in rows if row["event_tracker_id"] == tracker]


def test_dates_are_utc_text_clickhouse_parses() -> None:
    assert format_ts(
        datetime(2026, 3, 1, 9, 30, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    ) == ("2026-03-01 08:30:05.123")
    assert format_ts(datetime(2026, 3, 1, 8)) == "2026-03-01 08:00:00.000"  # naive means UTC
    assert format_ts(_ms("2026-03-01T08:00:00Z")) == "2026-03-01 08:00:00.000"
    assert format_ts(_ms("2026-03-01T10:00:00.5+02:00")) == "2026-03-01 08:00:00.500"
    assert format_ts(_ms("2026-03-01")) == "2026-03-01 00:00:00.000"
    assert ms_from_iso("2026-03-01T08:00:00Z") == 1772352000000  # epoch milliseconds
    assert ms_from_iso("2026-13-45T00:00:00Z") is None  # never sliced into the insert
    assert ms_from_iso("1800-01-01T00:00:00Z") is None  # outside DateTime64's range
    assert ms_from_iso("soon") is None


def test_bodies_keep_every_byte() -> None:
    assert encode_body(b'{"a": "\xc3\xa9"}') == ('{"a": "é"}', "text")
    assert encode_body(b"\xff\xfe\x00") == ("//4A", "base64")


def test_every_table_is_present_and_rows_have_exactly_its_columns(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    assert set(rows) == set(TABLES)
    for table, items in rows.items():
        if table == "dlq_redrive":  # written by a redrive, never by the pipeline
            continue
        assert items, f"{table} has no rows in the sample"
        for row in items:
            assert tuple(row) == columns_of(table), table


def test_events_rows_are_the_saved_events_with_typed_eva_maps(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    saved = [e.event_tracker_id for e in sample().batch.events if e.routing.has("save_event")]
    assert [r["event_tracker_id"] for r in rows["events"]] == saved
    assert len(saved) == 5 + SIMULATED  # t0 t1 t4 t7 t8 and every simulated uplink
    assert by_tracker(rows["events"], "t0") == [{
        "created": "2026-03-01 08:00:00.000", "org_id": "alpha-cold-room-1", "path_key": ROOM1,
        "event_tracker_id": "t0", "retention_days": 3650, "asset_id": "freezer-01",
        "template_id": "freezer-json", "event_type": "temperature",
        "event_id": "FRZ-0001:2026-03-01T08:00:00Z", "source": "ds-gateway-http",
        "payload": '{"temperature":-19.4,"humidity":61,"doorOpen":false,"battery":88,"status":"ok"}',
        "metadata": '{"source":"gateway"}', "eva_number": {1: -19.4, 2: 61.0},
        "eva_string": {4: "ok"}, "eva_bool": {3: 0}, "eva_date": {5: "2026-03-01 08:00:00.000"},
        "stream_seq": 1,
    }]  # fmt: skip
    lora = by_tracker(rows["events"], "t4")[0]
    assert (lora["created"], lora["retention_days"], lora["eva_number"], lora["eva_bool"]) == (
        "2026-03-01 08:03:00.000",
        4000,
        {1: -14.1, 2: 50.0},
        {},
    )
    door = by_tracker(rows["events"], "t8")[0]
    assert (door["asset_id"], door["org_id"], door["path_key"], door["eva_bool"]) == (
        "lora-door-01",
        "depot-beta",
        DEPOT,
        {3: 1},
    )


def test_events_not_routed_to_save_event_are_not_stored() -> None:
    base = sample().batch
    first = base.events[0]
    unrouted = replace(first, routing=RoutingResult([Dispatch("rules")], first.routing.history))
    batch = ProcessedBatch(events=[unrouted, base.events[1]], failures=[], rules=base.rules)
    out = as_dicts(batch_rows(batch, sample().context, now=NOW, ingested=sample().items))
    assert [r["event_tracker_id"] for r in out["events"]] == ["t1"]
    assert [r["event_tracker_id"] for r in out["logs_script"]] == ["t0", "t1"]  # still logged


def test_raw_bodies_only_for_debug_assets_and_bind_failures(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    raw = {r["event_tracker_id"]: r for r in rows["events_raw"]}
    debug_sim = {
        e.event_tracker_id for e in sample().batch.events if e.asset.id == "freezer-01"
    } - {"t0", "t1"}
    assert set(raw) == {"t0", "t1", "t5", "t6"} | debug_sim
    assert raw["t0"]["body"] == (GATEWAY / "freezer-gateway.jsonl").read_text().splitlines()[0]
    assert (raw["t0"]["stage"], raw["t0"]["reason"], raw["t0"]["created"]) == (
        "",
        "",
        "2026-03-01 08:00:30.000",
    )
    assert raw["t5"] == {
        "created": "2026-03-01 08:04:30.000", "org_id": "factory-alpha", "path_key": FACTORY,
        "event_tracker_id": "t5", "retention_days": 3650, "asset_id": "",
        "data_source_id": "ds-gateway-http", "stage": "bind",
        "reason": "no asset with assetUUID 'NOPE'", "body": '{"deviceId": "NOPE"}',
        "body_encoding": "text",
    }  # fmt: skip
    assert (raw["t6"]["body"], raw["t6"]["body_encoding"]) == ("//4=", "base64")


def test_script_log_has_every_event(rows: dict[str, list[dict[str, Any]]]) -> None:
    logs = {r["event_tracker_id"]: r for r in rows["logs_script"]}
    assert set(logs) == {i.event_tracker_id for i in sample().items}
    assert {k: logs["t0"][k] for k in ("success", "failed_stage", "duration_us", "error")} == {
        "success": 1, "failed_stage": "", "duration_us": 125, "error": ""
    }  # fmt: skip
    assert {k: logs["t2"][k] for k in ("success", "failed_stage", "error", "error_line")} == {
        "success": 0, "failed_stage": "validate", "error_line": 10,
        "error": 'Error: "temperature" must be less than or equal to 40',
    }  # fmt: skip
    assert (logs["t2"]["template_id"], logs["t5"]["template_id"]) == ("freezer-json", "")


def test_router_log_has_a_record_per_route_group(rows: dict[str, list[dict[str, Any]]]) -> None:
    t7 = by_tracker(rows["logs_router"], "t7")
    assert [
        (r["route_group_id"], r["version"], r["evaluated"], r["matched"], r["dispatched"])
        for r in t7
    ] == [
        ("rg-cold-chain", 1, 2, [0, 1], ["save_event", "rules"]),
        ("rg-critical-webhook", 1, 1, [0], ["trigger"]),
    ]


def test_rule_log_has_state_changes_and_a_trace_only_when_debug(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    t1 = {r["business_rule_id"]: r for r in by_tracker(rows["logs_rule"], "t1")}
    high = t1["factory-alpha-high-temp"]
    assert (high["matched"], high["actions"], high["trace"], high["retention_days"]) == (
        1,
        ["remember", "bump", "audit", "notify"],
        "",
        3650,
    )
    assert orjson.loads(high["state_changes"]) == {
        "lastAlertAt": {"from": "", "to": "2026-03-01T08:05:00.000Z"},
        "counter": {"from": 0, "to": 1},
    }
    door = t1["cold-room-door"]  # debug: true
    assert orjson.loads(door["trace"])["items"][0]["result"] is True
    room2 = by_tracker(rows["logs_rule"], "t4")[0]
    assert (room2["org_id"], room2["retention_days"], room2["asset_id"]) == (
        "alpha-cold-room-2",
        5000,
        "lora-th-01",
    )


def test_capture_rows_have_typed_maps(rows: dict[str, list[dict[str, Any]]]) -> None:
    t1 = by_tracker(rows["logs_capture"], "t1")
    assert [(r["business_rule_id"], r["name"], r["position"]) for r in t1] == [
        ("factory-alpha-high-temp", "high_temperature", 0),
        ("cold-room-door", "incident_opened", 0),
    ]
    assert (t1[0]["capture_number"], t1[0]["capture_string"], t1[0]["fields"]) == (
        {"temperature": -12.0}, {"assetId": "freezer-01"},
        '{"temperature":-12.0,"assetId":"freezer-01"}',
    )  # fmt: skip


def test_capture_dates_follow_the_declared_type() -> None:
    base = sample()
    evaluation = next(e for e in base.batch.rules.evaluations if e.captures)
    fields = {"at": "2026-03-01T09:00:00+01:00", "note": "2026-03-01T09:00:00+01:00",
              "ok": True, "n": 3, "gone": None}  # fmt: skip
    capture = replace(evaluation.captures[0], fields=fields)
    batch = ProcessedBatch(rules=replace(base.batch.rules, evaluations=[
        replace(evaluation, captures=[capture])]))  # fmt: skip
    context = replace(base.context, capture_types={evaluation.rule_id: {"at": "date"}})
    row = as_dicts(batch_rows(batch, context, now=NOW))["logs_capture"][0]
    assert (row["capture_date"], row["capture_string"], row["capture_bool"]) == (
        {"at": "2026-03-01 08:00:00.000"},
        {"note": "2026-03-01T09:00:00+01:00"},
        {"ok": 1},
    )
    assert row["capture_number"] == {"n": 3.0}
    assert row["created"] == "2026-03-01 08:05:00.000"  # no ingested batch: stamped with now


def test_dlq_rows_carry_stage_message_and_delivery_count(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    dlq = {r["event_tracker_id"]: r for r in rows["dlq"]}
    assert set(dlq) == {"t2", "t3", "t5", "t6"}
    assert dlq["t2"] == {
        "created": "2026-03-01 08:02:30.000", "org_id": "alpha-cold-room-1", "path_key": ROOM1,
        "event_tracker_id": "t2", "retention_days": 3650, "asset_id": "freezer-02",
        "data_source_id": "ds-gateway-http", "stage": "validate",
        "error": 'Error: "temperature" must be less than or equal to 40', "error_line": 10,
        "message": (GATEWAY / "freezer-gateway.jsonl").read_text().splitlines()[2],
        "message_encoding": "text", "deliveries": 3, "stream_seq": 3,
    }  # fmt: skip
    assert (dlq["t5"]["retention_days"], dlq["t5"]["deliveries"]) == (4500, 1)


def test_trigger_attempts_and_refusals() -> None:
    context = sample().context
    rows = sample().rows()["logs_trigger"]
    assert rows[0] == {
        "created": "2026-03-01 08:05:01.000", "org_id": "alpha-cold-room-1", "path_key": ROOM1,
        "event_tracker_id": "t1", "retention_days": 3650,
        "business_rule_id": "factory-alpha-high-temp", "action_id": "notify",
        "trigger_id": "slack-ops", "attempt": 1, "success": 0, "duration_ms": 120,
        "request": '{"text": "Alert #1"}', "response": "",
        "error": "HTTP 503 from slack: it's \\ down",
    }  # fmt: skip
    refused_row = refusal_row(event_tracker_id="r1", org_id="acme-foods", data_source_id="ds-ttn-webhook",
                          body=b"{}", reason="invalid API key", at=NOW, context=context)  # fmt: skip
    [refused] = as_dicts({"events_raw": [refused_row]})["events_raw"]
    assert (refused["stage"], refused["reason"], refused["path_key"], refused["created"]) == (
        "auth",
        "invalid API key",
        "0001/0001",
        "2026-03-01 08:05:00.000",
    )


def test_retention_policy() -> None:
    assert RETENTION.days("alpha-cold-room-2", "events") == 4000
    assert RETENTION.days("alpha-cold-room-2", "dlq") == 3650
    assert RetentionPolicy().days("any", "events") == DEFAULT_DAYS["events"]
    with pytest.raises(ValueError, match="unknown table 'evnts'"):
        RetentionPolicy(defaults={"evnts": 3})
    with pytest.raises(ValueError, match=r"retention must be 1..65535 days, got 70000"):
        RetentionPolicy(overrides={"o": {"events": 70000}})


def test_errors_detail_keeps_only_failures_debug_assets_and_rules_that_acted() -> None:
    s = sample()
    context = RowContext.from_catalog(s.catalog, RETENTION)  # the default: "errors"
    rows = as_dicts(batch_rows(s.batch, context, now=NOW, ingested=s.items))
    debug = {e.event_tracker_id for e in s.batch.events if e.asset.debug_enabled}
    failed = {f.event_tracker_id for f in s.batch.failures}
    assert debug and failed
    assert {r["event_tracker_id"] for r in rows["logs_script"]} == debug | failed
    assert {r["event_tracker_id"] for r in rows["logs_router"]} == debug
    acted = {
        (e.event_tracker_id, e.business_rule_id)
        for e in s.batch.rules.evaluations
        if e.matched or e.actions or e.error or e.state_changes or e.trace is not None
    }
    assert {(r["event_tracker_id"], r["business_rule_id"]) for r in rows["logs_rule"]} == acted
    assert len(acted) < len(s.batch.rules.evaluations)  # some evaluations did nothing
    assert len(rows["events"]) == len(
        as_dicts(batch_rows(s.batch, s.context, now=NOW, ingested=s.items))["events"]
    )
    with pytest.raises(ValueError, match="log_detail"):
        RowContext.from_catalog(s.catalog, RETENTION, log_detail="some")
