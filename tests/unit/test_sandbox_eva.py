"""A template test run reports, per Standard Event, what each EVA field would store (the lanes'
own extraction), so the console shows it next to the field being edited."""

from __future__ import annotations

from typing import Any

from eventray.pipeline.adapters.memory_config import MemoryConfigStore
from eventray.pipeline.management import LOCAL, EntityService
from eventray.pipeline.management.sandbox import run_template_test

TRANSFORM = (
    "result = { eventType: 'reading', eventId: String(payload.id), data: payload.data,"
    " created: payload.at };"
)
FIELDS = [
    {"fieldId": 1, "field": "Temperature", "value": "data.t", "type": "number"},
    {"fieldId": 2, "field": "Door open", "value": "data.door", "type": "bool"},
    {"fieldId": 3, "field": "Reading time", "value": "created", "type": "date"},
    {"fieldId": 4, "field": "Where", "value": "data.pos", "type": "geo"},
    {"fieldId": 5, "field": "Old", "value": "data.t", "type": "number", "status": "deprecated"},
    {"fieldId": 6, "field": "Label", "value": "data.label", "type": "string"},
]


def run(fields: list[dict[str, Any]], payloads: list[Any]) -> list[dict[str, Any]]:
    template = {"id": "tpl", "orgId": "acme", "name": "t", "scriptConversion": TRANSFORM,
                "dynamicFields": fields}  # fmt: skip
    return run_template_test(EntityService(MemoryConfigStore()), LOCAL, template, payloads)


def test_each_field_shows_its_stored_value_or_rejection() -> None:
    good = {"id": 1, "at": "2026-03-01T08:00:00Z",
            "data": {"t": -20, "door": True, "pos": {"lat": 1.5, "lng": 2}, "label": 7}}  # fmt: skip
    (report,) = run(FIELDS, [good])
    eva = {item["fieldId"]: item for item in report["eva"]}
    assert eva[1] == {"fieldId": 1, "field": "Temperature", "type": "number",
                      "status": "active", "value": -20.0}  # fmt: skip
    assert eva[2]["value"] is True
    assert eva[3]["value"] == 1772352000000  # epoch ms, as stored
    assert eva[4]["value"] == "1.5,2"
    assert "value" not in eva[5] and eva[5]["status"] == "deprecated"  # not extracted
    assert eva[6]["rejected"] is True and "value" not in eva[6]  # 7 is no string


def test_a_missing_path_has_no_value_and_a_failed_payload_no_eva() -> None:
    missing, failed = run(FIELDS[:1], [{"id": 2, "at": "2026-03-01T08:00:00Z", "data": {}},
                                       "not an object"])  # fmt: skip
    assert missing["eva"] == [{"fieldId": 1, "field": "Temperature", "type": "number",
                               "status": "active"}]  # fmt: skip
    assert "error" in failed and "eva" not in failed


def test_no_fields_no_eva() -> None:
    (report,) = run([], [{"id": 3, "at": "2026-03-01T08:00:00Z", "data": {"t": 1}}])
    assert "standardEvent" in report and "eva" not in report
