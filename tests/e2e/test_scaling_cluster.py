"""Lag-driven lane scaling on a multi-node Ray cluster on this machine: a head (the store, the
ingress) and two worker nodes (the lanes: the head has too few CPUs free for a lane), all on
loopback (``eventray.testing.multinode``). The tests run in order on one stack:

1. lag builds up (lane-0 paused: the work waits behind it): the controller adds lanes up to
   ``lanes_max``, spread over both worker nodes, and every event is stored once;
2. lag drained and the lanes idle: it removes them down to ``lanes_min``; the decisions are
   in the log, in ``status()`` and in the metrics;
3. an organization's events keep their order while its partition moves to a new lane and back;
4. a worker node is killed mid-stream: its lane comes back on the survivor, nothing is lost
   or stored twice, the rule counters are exact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import ray
import requests

from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import sample_documents
from eventray.config.settings import load_settings
from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.partitioning import partition_of
from eventray.testing.mail_sink import MailSink
from eventray.testing.multinode import MultiNodeRay
from eventray.testing.sink import WebhookSink
from eventray.testing.traffic import post_traffic
from tests.e2e.conftest import wait_for
from tests.e2e.test_fault import kill_mid_stream
from tests.unit.test_catalog import SAMPLE_TENANT

pytestmark = pytest.mark.ray

ORG = "alpha-cold-room-1"
KEY = "sample-key-change-me-0001"


@pytest.fixture(scope="module")
def cluster() -> Iterator[MultiNodeRay]:
    with MultiNodeRay(head_cpus=1, workers=2, worker_cpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    cluster: MultiNodeRay,
    tmp_path_factory: pytest.TempPathFactory,
    sink: WebhookSink,
    mail: MailSink,
) -> Iterator[Stack]:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("scaling"),
        pipeline={
            "partitions": 4,
            "lanes": 1,
            "lanes_min": 1,
            "lanes_max": 3,
            "batch_size": 200,
            "rebalance_interval_s": 0,
            "scale_up_lag": 200,
            "scale_down_lag": 5,
            "scale_window_s": 2.0,
            "scale_cooldown_s": 2.0,
        },
        # a lane needs a whole CPU: the head (1 CPU, the store and the ingress on it) has
        # none to spare, each worker node has room for two
        ray={"lane_cpus": 1.0, "actor_cpus": 0.05, "placement_timeout_s": 60},
        # Admission would shed a one-organization stream while lanes move or come back (its
        # job: those tests cover it); here every event sent must be taken.
        ingress={"port": 0, "max_queue_s": 120.0, "shed_heavy_s": 60.0},
        metrics={"port": 0},
        mqtt={"enabled": False},
        api={"enabled": False},
        store={"log_detail": "all"},  # rule rows for every event (the order check reads them)
        nats={"ack_wait_s": 5.0},
        triggers={"allow_networks": ("127.0.0.1/32",), "max_attempts": 2},
    )
    running = Stack(settings)
    try:
        running.start()
        running.apply(sample_documents(sink.url, mail.port))
        time.sleep(1.0)
        yield running
    finally:
        running.stop()


@pytest.fixture
def select(stack: Stack) -> Callable[[str], list[dict[str, Any]]]:
    def run(sql: str) -> list[dict[str, Any]]:
        return list(ray.get(stack.actors["store"].select.remote(sql.format(db="eventray"))))

    return run


def nodes_of_lanes(stack: Stack) -> dict[str, str]:
    names = list(stack.assignment)
    statuses = ray.get([stack.actors[n].status.remote() for n in names])
    return {name: status["node"] for name, status in zip(names, statuses, strict=True)}


def supervise_until(stack: Stack, check: Callable[[], bool], timeout_s: float = 120) -> None:
    """Supervision rounds every 0.5 s (``eventray up`` runs one every few seconds)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, stack.scaling_status()
        stack.supervise()
        time.sleep(0.5)


def stored_once(select: Callable[[str], list[dict[str, Any]]], trackers: list[str]) -> int:
    """How many of ``trackers`` are stored (the events table, or the DLQ for a pipeline
    stage: trigger failures are DLQ entries of stored events); fails on a tracker stored twice.
    ``FINAL``: a batch redelivered after a lost lane writes the same rows again, which the
    table collapses (its sorting key ends with the tracker id)."""
    quoted = ",".join(f"'{t}'" for t in trackers)
    sql = (
        "SELECT count() AS n, uniqExact(event_tracker_id) AS u FROM ("
        f"SELECT event_tracker_id FROM {{db}}.events FINAL WHERE event_tracker_id IN ({quoted}) "
        "UNION ALL SELECT event_tracker_id FROM {db}.dlq FINAL WHERE stage NOT LIKE 'trigger:%' "
        f"AND event_tracker_id IN ({quoted}))"
    )
    row = select(sql)[0]
    assert int(row["n"]) == int(row["u"]), row
    return int(row["u"])


def test_lag_adds_lanes_spread_over_the_worker_nodes(
    stack: Stack, cluster: MultiNodeRay, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert list(stack.assignment) == ["lane-0"]
    assert stack.scaling_status()["enabled"]
    assert set(nodes_of_lanes(stack).values()) <= set(cluster.worker_ids())
    ray.get(stack.actors["lane-0"].pause.remote())  # the work waits behind it: lag
    catalog = load_catalog([SAMPLE_TENANT], compile_scripts=False)
    sent = post_traffic(stack.ingress_url, catalog, events=3000, rate=0, chunk=100, seed=31)
    assert len(sent.tracker_ids) >= 2900, sent.answers  # the simulator sends a few bad ones
    supervise_until(stack, lambda: len(stack.assignment) == 3)
    ray.get(stack.actors["lane-0"].resume.remote())
    where = nodes_of_lanes(stack)
    assert set(where.values()) == set(cluster.worker_ids()), where  # both workers, not the head
    assert sorted(p for parts in stack.assignment.values() for p in parts) == [0, 1, 2, 3]
    assert all(stack.assignment.values())  # every lane owns a partition
    ups = [d for d in stack.decisions if d.direction == "up"]
    assert len(ups) == 2
    assert all(d.lag >= 200 for d in ups)
    wait_for(lambda: stored_once(select, sent.tracker_ids) == len(sent.tracker_ids), 120)


def test_drained_lanes_are_removed_and_the_decisions_are_logged_and_counted(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventray.cluster.stack")
    assert stack.wait_idle(timeout_s=60)
    removed = [n for n in stack.assignment if n != "lane-0"]
    supervise_until(stack, lambda: len(stack.assignment) == 1)
    assert list(stack.assignment) == ["lane-0"]
    assert stack.assignment["lane-0"] == [0, 1, 2, 3]
    for name in removed:
        assert name not in stack.actors
        wait_for(lambda name=name: _gone(name), 30)
    lines = [r.getMessage() for r in caplog.records if "lane scaling: down" in r.getMessage()]
    assert len(lines) == 2, lines
    assert all("lag" in line and "busy" in line for line in lines)
    status = stack.status()
    assert status["scaling"]["lanes"] == 1
    assert status["scaling"]["decisions"] == {"up": 2, "down": 2}
    metrics = requests.get(stack.metrics_url, timeout=10).text
    assert "eventray_lanes 1.0" in metrics
    assert 'eventray_scaling_decisions_total{direction="down"} 2.0' in metrics
    # and the one lane left carries new traffic
    catalog = load_catalog([SAMPLE_TENANT], compile_scripts=False)
    sent = post_traffic(stack.ingress_url, catalog, events=300, rate=0, chunk=50, seed=32)
    wait_for(lambda: stored_once(select, sent.tracker_ids) == len(sent.tracker_ids), 60)


def _gone(name: str) -> bool:
    try:
        ray.get_actor(name)
    except ValueError:
        return True
    return False


ORDER_RULE = {
    "kind": "Rule",
    "id": "count-every-reading",
    "orgId": "acme-foods",
    "shared": True,
    "variables": [{"name": "n", "type": "number", "default": 0}],
    "actions": [{"id": "bump", "type": "state", "op": "increment", "variable": "n"}],
    "when": {
        "logic": "AND",
        "actions": ["bump"],
        "items": [
            {
                "type": "condition",
                "data": {
                    "field": {"type": "event", "value": "data.status"},
                    "operator": "equals",
                    "value": {"type": "literal", "value": "ok"},  # -20 °C: every reading
                },
            }
        ],
    },
}
ORDER_BR = {
    "kind": "BusinessRule",
    "id": "br-count-every-reading",
    "ruleId": "count-every-reading",
    "orgId": "factory-alpha",
    "includeChildren": True,
}


def test_an_orgs_events_keep_their_order_across_partition_moves(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    """A counter bumped by every event of one organization, read back per event from the rule
    log: in stream order the counter must go up by exactly one each time, across a move of the
    organization's partition to a new lane and back."""
    stack.scale_between(1, 3)
    stack.apply([ORDER_RULE, ORDER_BR])
    time.sleep(1.0)
    partition = partition_of(ORG, stack.settings.pipeline.partitions)
    bodies = [
        {
            "deviceId": "FRZ-0002",
            "ts": f"2026-04-01T{n // 60:02d}:{n % 60:02d}:00Z",
            "readings": {"t": -20.0, "rh": 50},
            "door": "closed",
            "batt": 80,
        }
        for n in range(900)
    ]
    trackers: list[str] = []
    refused: list[int] = []

    def send() -> None:
        for start in range(0, len(bodies), 20):
            answer = requests.post(
                f"{stack.ingress_url}/api/v1/events/batch?ds=ds-gateway-http",
                data=orjson.dumps(bodies[start : start + 20]),
                headers={"X-Api-Key": KEY},
                timeout=30,
            )
            results = answer.json().get("results", [])
            trackers.extend(r["eventTrackerId"] for r in results if r["status"] == 201)
            refused.extend(r["status"] for r in results if r["status"] != 201)
            if not results:
                refused.append(answer.status_code)
            time.sleep(0.03)

    sender = threading.Thread(target=send)
    sender.start()
    moved: list[str] = []
    time.sleep(0.5)
    added = stack.add_lane()  # the busiest partition (this organization's) moves to it
    moved.extend(n for n, parts in stack.assignment.items() if partition in parts)
    time.sleep(0.7)
    stack.remove_lane()  # and back
    moved.extend(n for n, parts in stack.assignment.items() if partition in parts)
    sender.join()
    assert moved[0] == added and moved[1] != added, moved
    assert refused == []
    assert len(trackers) == len(bodies)
    wait_for(lambda: stored_once(select, trackers) == len(trackers), 90)
    sql = (
        "SELECT e.stream_seq AS seq, r.state_changes AS changes FROM {db}.events AS e FINAL "
        "INNER JOIN (SELECT event_tracker_id, any(state_changes) AS state_changes "
        "FROM {db}.logs_rule WHERE business_rule_id = 'br-count-every-reading' "
        "GROUP BY event_tracker_id) AS r ON e.event_tracker_id = r.event_tracker_id "
        f"WHERE e.org_id = '{ORG}' AND toDate(e.created) = '2026-04-01' ORDER BY seq"
    )
    rows = select(sql)
    assert len(rows) == len(bodies)
    counts = [_after(orjson.loads(row["changes"])) for row in rows]
    assert counts == list(range(counts[0], counts[0] + len(bodies))), counts[:20]


def _after(changes: dict[str, dict[str, Any]]) -> int:
    """The counter's value after the event, from a rule log row's ``state_changes``
    (``{variable: {"from": ..., "to": ...}}``)."""
    return int(changes["n"]["to"])


def test_a_worker_node_killed_mid_stream_loses_and_doubles_nothing(
    stack: Stack, cluster: MultiNodeRay, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    stack.scale_between(2, 2)  # ops pin two lanes: one per worker node
    supervise_until(stack, lambda: len(stack.assignment) == 2)
    where = nodes_of_lanes(stack)
    assert len(set(where.values())) == 2, where
    victim = where["lane-1"]
    survivor = where["lane-0"]

    def kill() -> None:
        cluster.kill_node(victim)

    kill_mid_stream(stack, select, kill, day=11)
    assert cluster.worker_ids() == [survivor]
    assert set(nodes_of_lanes(stack).values()) == {survivor}  # lane-1 came back there
    catalog = load_catalog([SAMPLE_TENANT], compile_scripts=False)
    sent = post_traffic(stack.ingress_url, catalog, events=300, rate=0, chunk=50, seed=33)
    wait_for(lambda: stored_once(select, sent.tracker_ids) == len(sent.tracker_ids), 60)
