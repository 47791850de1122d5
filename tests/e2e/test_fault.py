"""Fault tolerance: a rule partition dies mid-stream; nothing is lost or applied twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import ray
import requests

from eventray.actors.rules import rule_actor_name
from eventray.cluster.stack import Stack
from eventray.pipeline.adapters.redis_state import RedisStateStore
from eventray.pipeline.partitioning import partition_of
from eventray.pipeline.rules.engine import state_key
from tests.e2e.conftest import nats_refusals, wait_for

pytestmark = pytest.mark.ray

STACK_PIPELINE = {"rules_in_lane": False}  # rule partitions as their own actors

COUNTING_RULE = {
    "kind": "Rule",
    "id": "count-critical",
    "orgId": "acme-foods",
    "shared": True,
    "variables": [{"name": "seen", "type": "number", "default": 0}],
    "actions": [{"id": "bump", "type": "state", "op": "increment", "variable": "seen"}],
    "when": {
        "logic": "AND",
        "actions": ["bump"],
        "items": [
            {
                "type": "condition",
                "data": {
                    "field": {"type": "event", "value": "data.status"},
                    "operator": "equals",
                    "value": {"type": "literal", "value": "critical"},
                },
            }
        ],
    },
}
COUNTING_BR = {
    "kind": "BusinessRule",
    "id": "br-count-critical",
    "ruleId": "count-critical",
    "orgId": "factory-alpha",
    "includeChildren": True,
}


ORG = "alpha-cold-room-1"  # freezer-01 and freezer-02 live here
SUPERVISE_EVERY_S = 2.0  # `eventray up` supervises every 5 s; shorter keeps the tests short


def kill_mid_stream(
    stack: Stack,
    select: Callable[[str], list[dict[str, Any]]],
    kill: Callable[[], None],
    *,
    day: int,
    all_accepted: bool = True,
) -> int:
    """Post 600 readings (every third one critical) while ``kill`` strikes after 0.8 s, with
    the stack supervised as ``eventray up`` does; then assert every event the ingress accepted
    (201) is stored exactly once and the counting rule's state is exact. ``all_accepted=False``
    lets the ingress refuse events meanwhile (503: the stream was down); the rule must then have
    counted exactly the critical events that were stored. Returns how many were refused."""
    stack.apply([COUNTING_RULE, COUNTING_BR])
    time.sleep(1.0)
    partition = partition_of(ORG, stack.settings.pipeline.partitions)
    counted_before = critical_seen(stack, partition)  # an earlier test of the module counted too
    bodies = [
        {
            "deviceId": "FRZ-0002",
            "ts": f"2026-03-{day:02d}T{n // 60:02d}:{n % 60:02d}:00Z",
            "readings": {"t": -10.0 if n % 3 == 0 else -20.0, "rh": 50},
            "door": "closed",
            "batt": 80,
        }
        for n in range(600)
    ]
    trackers: list[str] = []
    refused: list[int] = []

    def send() -> None:
        for start in range(0, len(bodies), 20):
            for _ in range(30):  # a whole request shed (429: the queue is long on a busy
                answer = requests.post(  # machine) is sent again after its Retry-After
                    f"{stack.ingress_url}/api/v1/events/batch?ds=ds-gateway-http",
                    data=orjson.dumps(bodies[start : start + 20]),
                    headers={"X-Api-Key": "sample-key-change-me-0001"},
                    timeout=30,
                )
                if answer.status_code != 429:
                    break
                time.sleep(min(float(answer.headers.get("Retry-After", 1)), 2.0))
            for result in answer.json()["results"]:
                if result["status"] == 201:
                    trackers.append(result["eventTrackerId"])
                else:
                    refused.append(result["status"])
            time.sleep(0.05)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.8)
    kill()
    while sender.is_alive():  # supervised meanwhile, as `eventray up` does every few seconds
        sender.join(timeout=SUPERVISE_EVERY_S)
        stack.supervise()
    if all_accepted:
        assert len(trackers) == len(bodies)
    assert set(refused) <= {503}, refused
    assert len(trackers) + len(refused) == len(bodies)
    quoted = ",".join(f"'{t}'" for t in trackers)

    def stored() -> int:
        stack.supervise()
        sql = f"SELECT count() AS n FROM {{db}}.events FINAL WHERE event_tracker_id IN ({quoted})"
        return int(select(sql)[0]["n"])

    wait_for(lambda: stored() == len(trackers), timeout_s=90)
    assert stack.wait_idle(timeout_s=60)
    assert stored() == len(trackers)  # FINAL collapses redelivered copies; none is missing
    critical = stored_critical(select, day)  # a refused event may have reached the stream
    if all_accepted:
        assert critical == sum(1 for b in bodies if b["readings"]["t"] == -10.0)
    assert critical_seen(stack, partition) - counted_before == critical
    return len(refused)


def critical_seen(stack: Stack, partition: int) -> int:
    """The counting rule's state: critical events it has seen so far."""
    state = RedisStateStore(url=stack.endpoints.redis_url)  # type: ignore[union-attr]
    try:
        key = state_key(ORG, "br-count-critical", "seen")
        return int(state.load([key], partition=f"p{partition}").values.get(key, 0))
    finally:
        state.close()


def stored_critical(select: Callable[[str], list[dict[str, Any]]], day: int) -> int:
    """Critical readings of ``day`` in the events table, each counted once."""
    sql = (
        f"SELECT count() AS n FROM {{db}}.events FINAL WHERE org_id = '{ORG}' "
        f"AND toDate(created) = '2026-03-{day:02d}' "
        "AND JSONExtractString(payload, 'status') = 'critical'"
    )
    return int(select(sql)[0]["n"])


def test_killing_a_rule_partition_mid_stream_loses_and_doubles_nothing(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert not stack.settings.pipeline.rules_in_lane
    partition = partition_of(ORG, stack.settings.pipeline.partitions)
    assert stack.rule_layout is not None
    victim = stack.actors[rule_actor_name(partition, stack.rule_layout)]
    # Ray restarts it; the lane retries the interrupted batch in place.
    kill_mid_stream(stack, select, lambda: ray.kill(victim, no_restart=False), day=2)
    lanes = stack.status()["lanes"]
    assert sum(lane["retries"] for lane in lanes) >= 1, "the kill should have interrupted a batch"


def test_killing_the_store_actor_mid_stream_loses_and_doubles_nothing(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    """The store answers a lane once the rows are in its write-ahead log, before they are
    inserted; killed, Ray restarts it and the successor inserts what the log holds, while the
    lanes retry the batches whose call the kill interrupted."""
    victim = stack.actors["store"]
    kill_mid_stream(stack, select, lambda: ray.kill(victim, no_restart=False), day=3)
    stats = stack.status()["store"]
    assert stats["last_error"] == "" and stats["kept_in_dlq"] == 0


def test_no_role_was_refused_anything_on_the_way(stack: Stack) -> None:
    """Everything above ran on the actors' own NATS users (:mod:`eventray.cluster.roles`)."""
    assert nats_refusals(stack) == []
