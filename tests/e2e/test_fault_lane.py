"""Fault tolerance with rules evaluated in the lanes: the lane itself (its rule partitions, its
script host child, its unacknowledged batches) dies mid-stream; JetStream redelivers after
``ack_wait`` and the sequence fence keeps every counter exact."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import ray
import requests

from cluster.stack import Stack
from pipeline.adapters.redis_state import RedisStateStore
from pipeline.partitioning import partition_of
from pipeline.rules.engine import state_key
from tests.e2e.conftest import wait_for
from tests.e2e.test_fault import COUNTING_BR, COUNTING_RULE

pytestmark = pytest.mark.ray

STACK_PIPELINE = {"rules_in_lane": True}


def test_killing_a_lane_with_in_lane_rules_loses_and_doubles_nothing(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert stack.settings.pipeline.rules_in_lane
    assert not any(name.startswith("rules-") for name in stack.actors)
    stack.apply([COUNTING_RULE, COUNTING_BR])
    time.sleep(1.0)
    org = "alpha-cold-room-1"
    partition = partition_of(org, stack.settings.pipeline.partitions)
    bodies = [
        {
            "deviceId": "FRZ-0002",
            "ts": f"2026-03-03T{n // 60:02d}:{n % 60:02d}:00Z",
            "readings": {"t": -10.0 if n % 3 == 0 else -20.0, "rh": 50},
            "door": "closed",
            "batt": 80,
        }
        for n in range(600)
    ]
    expected_critical = sum(1 for b in bodies if b["readings"]["t"] == -10.0)
    trackers: list[str] = []

    def send() -> None:
        for start in range(0, len(bodies), 20):
            answer = requests.post(
                f"{stack.ingress_url}/api/v1/events/batch?ds=ds-gateway-http",
                data=orjson.dumps(bodies[start : start + 20]),
                headers={"X-Api-Key": "sample-key-change-me-0001"},
                timeout=10,
            )
            trackers.extend(r["eventTrackerId"] for r in answer.json()["results"])
            time.sleep(0.05)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.8)
    killed_at = time.monotonic()
    [lane] = stack.lanes()
    ray.kill(lane, no_restart=False)  # Ray restarts the process; the supervisor restarts work
    sender.join()
    assert len(trackers) == len(bodies)
    quoted = ",".join(f"'{t}'" for t in trackers)

    def stored() -> int:
        stack.supervise()  # what `eventray up` does every few seconds
        sql = f"SELECT count() AS n FROM {{db}}.events FINAL WHERE event_tracker_id IN ({quoted})"
        return int(select(sql)[0]["n"])

    wait_for(lambda: stored() == len(bodies), timeout_s=90)
    assert stack.wait_idle(timeout_s=60)
    assert stored() == len(bodies)  # FINAL collapses redelivered copies; none is missing
    state = RedisStateStore(url=stack.endpoints.redis_url)  # type: ignore[union-attr]
    try:
        key = state_key(org, "br-count-critical", "seen")
        assert state.load([key], partition=f"p{partition}").values[key] == expected_critical
    finally:
        state.close()
    [status] = stack.status()["lanes"]
    assert status["uptime_s"] < time.monotonic() - killed_at, "the lane should have restarted"
