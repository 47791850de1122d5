"""What organizations carry for their tenants (issue 9 §1): a timezone, which a business rule's
``timezone: dynamic`` reads before the event's metadata, and retention days per group of
tables, which the stored rows' TTL follows; both inherited down the tree."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from eventray.pipeline.catalog import build_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import ConfigIssue
from eventray.pipeline.loader import entity_from_dict, read_documents
from eventray.pipeline.rules.engine import RuleEngine, RuleSet
from eventray.pipeline.storage.retention import DEFAULT_DAYS, RetentionPolicy
from eventray.pipeline.storage.rows import RowContext
from tests.unit.rulekit import ORG_PATHS, event
from tests.unit.test_rule_engine import NIGHT, br

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"


def catalog_with(**org_fields: dict[str, Any]) -> Any:
    issues: list[ConfigIssue] = []
    docs = [copy.deepcopy(doc) for _, doc in read_documents([TENANT], issues)]
    for doc in docs:
        if doc["kind"] == "Organization" and doc["id"] in org_fields:
            doc.update(org_fields[doc["id"]])
    entities = []
    for doc in docs:
        entity = entity_from_dict("t", doc, issues)
        assert entity is not None, issues
        entities.append(("t", entity))
    return build_catalog(entities, compile_scripts=False)


def test_timezone_and_retention_are_validated() -> None:
    issues: list[ConfigIssue] = []
    entity_from_dict("t", {"kind": "Organization", "id": "x", "name": "X", "type": "site",
                           "timezone": "Mars/Olympus",
                           "retentionDays": {"events": 0, "events_raw": 7, "nope": 1}}, issues)  # fmt: skip
    assert sorted((i.path, i.reason.split(" (")[0]) for i in issues) == [
        ("retentionDays.events", "Input should be greater than or equal to 1"),
        ("retentionDays.nope", "Extra inputs are not permitted"),
        ("timezone", "unknown timezone 'Mars/Olympus'"),
    ]


def test_timezones_are_inherited_down_the_tree() -> None:
    catalog = catalog_with(**{"acme-foods": {"timezone": "America/New_York"},
                              "factory-alpha": {"timezone": "Asia/Tokyo"}})  # fmt: skip
    zones = catalog.org_timezones()
    assert zones["alpha-cold-room-2"] == ZoneInfo("Asia/Tokyo")
    assert zones["depot-beta"] == ZoneInfo("America/New_York")
    assert "mapex" not in zones


def test_dynamic_timezone_reads_the_organization_before_the_event() -> None:
    clock = ManualClock(datetime(2026, 1, 15, 21, 30, tzinfo=UTC))  # 22:30 Berlin, 06:30 Tokyo
    zones = {"factory-alpha": ZoneInfo("Europe/Berlin")}
    ruleset = RuleSet({"night": NIGHT}, [br("night", "dyn", timezone="dynamic",
                                            includeChildren=True, orgId="acme")],
                      ORG_PATHS, org_timezones=zones)  # fmt: skip
    assert not ruleset.errors
    from eventray.pipeline.adapters.memory_state import MemoryStateStore

    for reference in (False, True):  # the generated code and the reference closures agree
        engine = RuleEngine(ruleset, MemoryStateStore(), clock=clock, reference=reference)
        out = engine.evaluate([
            event({}, org="factory-alpha", metadata={"timezone": "UTC"}),  # org: Berlin, night
            event({}, org="site-b", metadata={"timezone": "Europe/Berlin"}),  # no org zone
            event({}, org="site-b", metadata={"timezone": "UTC"}),
        ])  # fmt: skip
        assert [e.matched for e in out.evaluations] == [True, True, False], reference


@pytest.mark.parametrize("setting", [{}, {"dlq": 5, "events": 11}])
def test_retention_days_follow_the_tree_and_win_over_the_setting(
    setting: dict[str, int],
) -> None:
    catalog = catalog_with(**{"acme-foods": {"retentionDays": {"events": 400, "logs": 14}},
                              "factory-alpha": {"retentionDays": {"events": 30}},
                              "depot-beta": {"retentionDays": {"dlq": 200}}})  # fmt: skip
    policy = RetentionPolicy(overrides={"alpha-cold-room-1": setting} if setting else {})
    rows = RowContext.from_catalog(catalog, policy).retention
    assert rows.days("alpha-cold-room-1", "events") == 30  # factory-alpha's, nearest
    assert rows.days("alpha-cold-room-1", "logs_rule") == 14  # acme-foods' logs
    assert rows.days("alpha-cold-room-1", "dlq") == setting.get("dlq", DEFAULT_DAYS["dlq"])
    assert rows.days("depot-beta", "events") == 400
    assert rows.days("depot-beta", "dlq") == 200
    assert rows.days("mapex", "events") == DEFAULT_DAYS["events"]


def test_a_zone_directory_is_no_timezone() -> None:
    issues: list[ConfigIssue] = []
    entity_from_dict("t", {"kind": "Organization", "id": "x", "name": "X", "type": "site",
                           "timezone": "Europe"}, issues)  # fmt: skip
    assert [i.path for i in issues] == ["timezone"]
