"""Redrive and replay on the running stack (Ray, NATS JetStream, Valkey, chDB), through the CLI
as an operator runs it and through the service as an API route calls it.

Two sibling tenants, ``rp-alpha`` and ``rp-beta``, whose templates fail events with ``bad``:
alpha's template is fixed with ``apply``, its DLQ redriven (events stored once under their
original eventTrackerIds, a second redrive processes nothing, beta's DLQ untouched); then
alpha's template changes again and a range is replayed (stored rows replaced: one per
eventTrackerId, the new version), with rule state kept or rebuilt fresh, triggers sent again
only when asked.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventray.cluster.replaying import stack_replay_service
from eventray.cluster.stack import Stack
from eventray.pipeline.replay import RedriveRequest, ReplayService, Scope
from eventray.testing.sink import WebhookSink
from tests.e2e.conftest import nats_refusals, plain_environment, wait_for
from tests.e2e.test_cold_chain import post

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
Select = Callable[[str], list[dict[str, Any]]]

PASS = (
    "result = {eventType: 'reading', eventId: String(payload.n), data: payload, "
    "created: payload.ts};"
)
BROKEN = "if (payload.bad) { throw new Error('bad reading ' + payload.n); } " + PASS
VERSION_2 = (
    "result = {eventType: 'reading', eventId: String(payload.n), "
    "data: Object.assign({}, payload, {version: 2}), created: payload.ts};"
)


def tenant(name: str, sink: WebhookSink, script: str) -> list[dict[str, Any]]:
    org = f"rp-{name}"
    return [
        {"kind": "Organization", "id": org, "name": org, "type": "customer"},
        {"kind": "DataSource", "id": f"ds-{org}", "orgId": org, "name": org, "protocol": "http",
         "auth": {"type": "none"}, "assetBind": {"uuidFields": ["device"]}},
        {"kind": "AssetTemplate", "id": f"tpl-{org}", "orgId": org, "name": org,
         "scriptConversion": script},
        {"kind": "Trigger", "id": f"hook-{org}", "orgId": org, "name": "hook",
         "triggerType": "http", "config": {"http": {"endpoint": f"{sink.url}/hooks/{org}",
                                                    "method": "POST"}}},
        {"kind": "RouteGroup", "id": f"rg-{org}", "orgId": org, "name": "all", "version": 1,
         "routers": [
             {"kind": "save_event"},
             {"kind": "rules"},
             {"kind": "trigger", "trigger": {"triggerId": f"hook-{org}"},
              "match": {"policy": "all", "rules": [{"field": "data.alert", "operator": "eq",
                                                    "value": True}]}},
         ]},
        {"kind": "Asset", "id": f"dev-{org}", "orgId": org, "assetUUID": f"U-{org}",
         "name": org, "templateId": f"tpl-{org}", "routeGroupIds": [f"rg-{org}"]},
        {"kind": "Rule", "id": f"count-{org}", "orgId": org, "variables": [
            {"name": "seen", "type": "number", "default": 0}],
         "actions": [{"id": "bump", "type": "state", "op": "increment", "variable": "seen"}],
         "when": {"logic": "AND", "actions": ["bump"], "items": [{"type": "condition", "data": {
             "field": {"type": "event", "value": "data.n"}, "operator": "exists"}}]}},
        {"kind": "BusinessRule", "id": f"br-{org}", "ruleId": f"count-{org}", "orgId": org},
    ]  # fmt: skip


def template(name: str, script: str) -> dict[str, Any]:
    org = f"rp-{name}"
    return {"kind": "AssetTemplate", "id": f"tpl-{org}", "orgId": org, "name": org,
            "scriptConversion": script}  # fmt: skip


def send(stack: Stack, name: str, n: int, **extra: Any) -> str:
    org = f"rp-{name}"
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"device": f"U-{org}", "n": n, "ts": ts, **extra}
    answer = post(stack, body, ds=f"ds-{org}", headers={})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["eventTrackerId"])


def cli(stack: Stack, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", *args,
         "--data-dir", str(stack.settings.data_dir)],
        env=plain_environment(), capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def state(stack: Stack, org: str) -> Any:
    store = stack.wiring.state_store()
    key = f"state:{org}:br-{org}:seen"
    return store.load([key], partition="p0").values.get(key)


def in_process(stack: Stack, work: Callable[[ReplayService], Any]) -> Any:
    """Run ``work`` with the service as an API route in the stack's Ray namespace has it."""

    async def main() -> Any:
        async with stack_replay_service(stack.wiring) as service:
            return await work(service)

    return asyncio.run(main())


def rows_of(stack: Stack) -> Select:
    import ray

    def run(sql: str) -> list[dict[str, Any]]:
        return list(ray.get(stack.actors["store"].select.remote(sql.format(db="eventray"))))

    return run


@pytest.fixture(scope="module")
def tenants(stack: Stack, sink: WebhookSink) -> Iterator[dict[str, list[str]]]:
    """Both tenants with their broken templates; alpha's events 1..6 (2 and 5 bad, 3 an
    alert), beta's 1..3 (2 bad); their trackers by tenant, in order, and ``split``: a time
    between alpha's events 2 and 3."""
    assert stack.wait_revision(stack.apply(tenant("alpha", sink, BROKEN) + tenant("beta", sink,
                                                                                   BROKEN)))  # fmt: skip
    alpha = [send(stack, "alpha", n, bad=n == 2) for n in (1, 2)]
    time.sleep(0.05)
    split = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.05)
    alpha += [send(stack, "alpha", n, bad=n == 5, alert=n == 3) for n in range(3, 7)]
    trackers = {
        "alpha": alpha,
        "beta": [send(stack, "beta", n, bad=n == 2) for n in range(1, 4)],
        "split": [split],
    }

    select = rows_of(stack)

    def settled() -> bool:
        dlq = select("SELECT count() AS n FROM {db}.dlq FINAL WHERE startsWith(org_id, 'rp-')")
        stored = select(
            "SELECT count() AS n FROM {db}.events FINAL WHERE startsWith(org_id, 'rp-')"
        )
        return (int(dlq[0]["n"]), int(stored[0]["n"])) == (3, 6)

    wait_for(settled)
    wait_for(lambda: len([r for r in sink.requests if r["path"] == "/hooks/rp-alpha"]) == 1)
    yield trackers


def per_tracker(select: Select, org: str) -> dict[str, list[dict[str, Any]]]:
    rows = select(
        "SELECT event_tracker_id, payload, stream_seq FROM {db}.events FINAL "
        f"WHERE org_id = '{org}' ORDER BY event_tracker_id"
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["event_tracker_id"], []).append(row)
    return out


def test_a_fixed_template_then_a_redrive_stores_each_event_once_under_its_tracker_id(
    stack: Stack, tenants: dict[str, list[str]], select: Select
) -> None:
    alpha, beta = tenants["alpha"], tenants["beta"]
    assert state(stack, "rp-alpha") == 4 and state(stack, "rp-beta") == 2
    assert stack.wait_revision(stack.apply([template("alpha", PASS)]))

    dry = cli(stack, "dlq", "redrive", "--org", "rp-alpha", "--dry-run")
    assert [(line["eventTrackerId"], line["outcome"]) for line in dry[:-1]] == [
        (alpha[1], "would-redrive"), (alpha[4], "would-redrive")
    ]  # fmt: skip
    assert dry[-1]["dryRun"] and dry[-1]["wouldRedrive"] == 2

    # As an API route calls it, with alpha's own scope: beta's DLQ is not alpha's business.
    async def redrive(service: ReplayService) -> Any:
        catalog_path = next(
            e.path_key for e in await service.dead_letters(
                Scope.everything(), RedriveRequest(org_id="rp-alpha"))
        )  # fmt: skip
        report = await service.redrive(Scope(catalog_path), RedriveRequest(everything=True),
                                       requested_by="api:alpha-admin")  # fmt: skip
        return report, await service.wait(report.copies, timeout_s=60)

    report, processed = in_process(stack, redrive)
    assert processed
    assert [(i.entry.event_tracker_id, i.outcome) for i in report.items] == [
        (alpha[1], "redriven"), (alpha[4], "redriven")
    ]  # fmt: skip

    stored = per_tracker(select, "rp-alpha")
    assert sorted(stored) == sorted(alpha)  # all six, each once, the two under their own ids
    assert all(len(rows) == 1 for rows in stored.values())
    assert orjson.loads(stored[alpha[4]][0]["payload"])["bad"] is True
    assert state(stack, "rp-alpha") == 6  # counted once each

    again = cli(stack, "dlq", "redrive", "--org", "rp-alpha", "--wait", "30")
    assert again == [again[-1]] and again[-1]["redriven"] == 0  # nothing left to redrive
    history = cli(stack, "dlq", "list", "--org", "rp-alpha", "--redriven", "yes")
    assert sorted(line["eventTrackerId"] for line in history) == sorted([alpha[1], alpha[4]])
    assert {line["redriven"]["by"] for line in history} == {"api:alpha-admin"}

    pending = cli(stack, "dlq", "list", "--redriven", "no", "--org", "rp-beta")
    assert [line["eventTrackerId"] for line in pending] == [beta[1]]  # untouched
    assert state(stack, "rp-beta") == 2


def test_a_replayed_range_replaces_rows_and_keeps_or_rebuilds_state_and_triggers(
    stack: Stack, tenants: dict[str, list[str]], select: Select, sink: WebhookSink
) -> None:
    alpha = tenants["alpha"]
    assert state(stack, "rp-alpha") == 6  # after the redrive test
    assert stack.wait_revision(stack.apply([template("alpha", VERSION_2)]))
    hooks = lambda: [r for r in sink.requests if r["path"] == "/hooks/rp-alpha"]  # noqa: E731
    assert len(hooks()) == 1

    since = "2000-01-01T00:00:00Z"
    (keep,) = cli(stack, "replay", "--org", "rp-alpha", "--since", since, "--wait", "60")
    assert (keep["events"], keep["state"], keep["processed"]) == (6, "keep", True)
    assert keep["partitions"][0]["orgs"] == ["rp-alpha"]
    stored = per_tracker(select, "rp-alpha")
    assert sorted(stored) == sorted(alpha)
    assert all(len(rows) == 1 for rows in stored.values())  # replaced, not duplicated
    assert all(orjson.loads(rows[0]["payload"])["version"] == 2 for rows in stored.values())
    first, last = keep["partitions"][0]["copies"]
    assert all(first <= int(rows[0]["stream_seq"]) <= last for rows in stored.values())
    assert state(stack, "rp-alpha") == 6  # no rule evaluated again
    time.sleep(1.0)
    assert len(hooks()) == 1  # nothing sent again

    # Fresh from the split (events 3..6): the state counts the range only.
    split = tenants["split"][0]
    (fresh,) = cli(stack, "replay", "--org", "rp-alpha", "--since", split, "--state", "fresh",
                   "--wait", "60")  # fmt: skip
    assert (fresh["events"], fresh["processed"]) == (4, True)
    assert fresh["partitions"][0]["sample"] == alpha[2:]
    assert fresh["partitions"][0]["resetSeq"] > 0
    assert state(stack, "rp-alpha") == 4  # reset, then each event of the range once
    (whole,) = cli(stack, "replay", "--org", "rp-alpha", "--since", since, "--state", "fresh",
                   "--wait", "60")  # fmt: skip
    assert whole["events"] == 6  # the copies of earlier replays are not events
    assert state(stack, "rp-alpha") == 6
    assert state(stack, "rp-beta") == 2
    time.sleep(1.0)
    assert len(hooks()) == 1

    (loud,) = cli(stack, "replay", "--org", "rp-alpha", "--since", since, "--triggers",
                  "--wait", "60")  # fmt: skip
    assert loud["processed"]
    wait_for(lambda: len(hooks()) == 2)  # the alert's delivery, sent again as asked
    assert hooks()[-1]["body"]["eventTrackerId"] == alpha[2]  # event 3's, the alert
    assert all(len(rows) == 1 for rows in per_tracker(select, "rp-alpha").values())
    assert nats_refusals(stack) == []  # the CLI publishes with the admin's credentials
