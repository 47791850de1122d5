"""Reading what was stored from a running stack: the store actor's read methods with a tenant's
scope, and the CLI (``events query --where``, ``logs``, ``events story``) attached to it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventray.cluster.stack import Stack
from eventray.pipeline.catalog import catalog_from_store
from eventray.pipeline.storage.reading import plan_event_query, plan_log_query
from eventray.pipeline.storage.scope import Scope
from tests.e2e.conftest import plain_environment, wait_for
from tests.e2e.test_cold_chain import post, reading

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", *args, "--data-dir",
         str(stack.settings.data_dir)],
        env=plain_environment(), capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def test_a_tenant_reads_its_events_logs_and_stories_and_nothing_of_its_sibling(
    stack: Stack,
) -> None:
    import ray

    hot = post(stack, reading("FRZ-0001", 30, -12.0)).json()["eventTrackerId"]  # debug asset
    broken = post(stack, {"deviceId": "FRZ-0002", "readings": {"t": -20}}).json()["eventTrackerId"]
    store = stack.actors["store"]
    config = stack.wiring.config_store()
    try:
        catalog, _ = catalog_from_store(config)
    finally:
        config.close()
    factory, depot = Scope.of_org(catalog, "factory-alpha"), Scope.of_org(catalog, "depot-beta")

    def story(scope: Scope, tracker: str) -> Any:
        return ray.get(store.event_story.remote(scope, tracker))

    wait_for(lambda: story(factory, broken) is not None)
    wait_for(lambda: bool((s := story(factory, hot)) and s.of("trigger")))
    told = story(factory, hot)
    kinds = [step.kind for step in told.steps]
    assert {"raw", "script", "router", "event", "rule", "capture", "trigger"} <= set(kinds)
    assert kinds.index("event") < kinds.index("rule") < kinds.index("trigger")
    assert story(depot, hot) is None and story(depot, broken) is None

    query = plan_event_query(catalog, factory, where=["temperature > -15", "status = critical"])
    page = ray.get(store.query_events.remote(query))
    assert hot in [row["event_tracker_id"] for row in page.rows]
    depot_rows = ray.get(store.query_events.remote(plan_event_query(catalog, depot))).rows
    assert all(depot.contains(row["path_key"]) for row in depot_rows)
    assert hot not in [row["event_tracker_id"] for row in depot_rows]
    dlq = ray.get(store.query_logs.remote(plan_log_query(catalog, factory, "dlq")))
    assert broken in [row["event_tracker_id"] for row in dlq.rows]
    sibling = ray.get(store.query_logs.remote(plan_log_query(catalog, depot, "dlq")))
    assert broken not in [row["event_tracker_id"] for row in sibling.rows]

    # The CLI: the local administrator's platform scope.
    found = _cli(stack, "events", "query", "--where", "temperature > -15", "--where",
                 "doorOpen = false", "--format", "csv", "--all")  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(found.stdout)))
    assert hot in [row["event_tracker_id"] for row in rows]
    assert all(json.loads(row["eva_number"])["1"] > -15 for row in rows)
    refused = _cli(stack, "events", "query", "--where", "temperature ~ 3")
    assert refused.returncode == 1 and "unknown operator '~'" in refused.stderr
    logs = _cli(stack, "logs", "dlq", "--stage", "validate", "--tracker", broken)
    assert logs.returncode == 0, logs.stderr[-2000:]
    [entry] = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{")]
    assert (entry["event_tracker_id"], entry["message_json"]["deviceId"]) == (broken, "FRZ-0002")
    whole = _cli(stack, "events", "story", hot)
    assert whole.returncode == 0, whole.stderr[-2000:]
    document = json.loads(whole.stdout)
    assert document["summary"]["stored"] and document["summary"]["triggerAttempts"] >= 1
