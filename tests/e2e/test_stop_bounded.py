"""Ctrl-C with a stuck partition: `eventray up` stops within its deadline, names the batch it
abandoned, and the next start processes that batch (JetStream redelivers it).

The partition is stuck on a template that loops: every event runs into the script time limit,
so one batch of ten holds the partition for ten seconds, five times the stop deadline (before
the deadline, the stop waited for the batch: 61.7 s when it took 100 s).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from eventray.pipeline.adapters.nats_bus import JetStreamBus
from tests.e2e.conftest import Up, wait_for

pytestmark = pytest.mark.ray

STOP_TIMEOUT_S = 2.0
EVENTS = 10
ENV = {
    "EVENTRAY_PIPELINE__PARTITIONS": "1",
    "EVENTRAY_PIPELINE__LANES": "1",
    "EVENTRAY_PIPELINE__BATCH_SIZE": str(EVENTS),
    "EVENTRAY_PIPELINE__LINGER_S": "0.5",  # the ten events make one batch
    "EVENTRAY_PIPELINE__STOP_TIMEOUT_S": str(STOP_TIMEOUT_S),
    "EVENTRAY_SCRIPTS__TIME_LIMIT_S": "1.0",
}
DOCUMENTS: list[dict[str, Any]] = [
    {"kind": "Organization", "id": "org", "name": "org", "type": "customer"},
    {"kind": "DataSource", "id": "ds", "orgId": "org", "name": "ds", "protocol": "http",
     "auth": {"type": "none"}, "assetBind": {"uuidFields": ["device"]}},
    {"kind": "AssetTemplate", "id": "t", "orgId": "org", "name": "t",
     "scriptConversion": "for (;;) {}"},
    {"kind": "RouteGroup", "id": "rg", "orgId": "org", "name": "rg", "version": 1,
     "routers": [{"kind": "save_event"}]},
    {"kind": "Asset", "id": "dev", "orgId": "org", "assetUUID": "D", "name": "dev",
     "templateId": "t", "routeGroupIds": ["rg"]},
]  # fmt: skip


def _stack_json(up: Up) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((up.data_dir / "stack.json").read_text())
    return info


def _post(ingress: str) -> list[int]:
    """Post the events once the ingress knows the data source (it reloads after `up` applied
    the config); the HTTP statuses."""
    body = [{"device": "D", "n": n} for n in range(EVENTS)]
    deadline = time.monotonic() + 30
    while True:
        answer = requests.post(f"{ingress}/api/v1/events/batch?ds=ds", json=body, timeout=10)
        statuses = [int(r["status"]) for r in answer.json().get("results", [])]
        if statuses and 404 not in statuses:
            return statuses
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)


def _unacknowledged(nats_url: str) -> int:
    async def read() -> int:
        bus = JetStreamBus(url=nats_url)
        await bus.connect()
        try:
            info = await bus.js.consumer_info(bus.stream, "lane-p0")
            return int(info.num_ack_pending or 0)
        finally:
            await bus.close()

    return asyncio.run(read())


def _lane_counters(metrics_url: str) -> tuple[float, float, float]:
    """(stored, DLQ, lag) from the stack's /metrics."""
    text = requests.get(metrics_url, timeout=5).text

    def total(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name))  # fmt: skip

    return (
        total("eventray_lane_events_total"),
        total("eventray_lane_failed_total"),
        total("eventray_consumer_lag"),
    )


def test_ctrl_c_with_a_stuck_partition_is_bounded_and_loses_nothing(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    config = tmp_path / "tenant.json"
    config.write_text(json.dumps(DOCUMENTS))
    first = start_up(args=("--config", str(config)), env=ENV)
    first.wait_until_up()
    info = _stack_json(first)
    assert _post(info["ingress_url"]) == [201] * EVENTS
    nats_url = info["endpoints"]["nats_url"]
    wait_for(lambda: _unacknowledged(nats_url) == EVENTS, timeout_s=10)  # the lane holds them

    asked = time.monotonic()
    first.process.send_signal(signal.SIGINT)
    assert first.wait_exit(timeout_s=60) == 0
    took = time.monotonic() - asked
    out = first.stdout.read_text()
    print(f"stop with a stuck partition took {took:.1f} s\n{out}")
    assert took < STOP_TIMEOUT_S + 6, out  # the deadline and a few seconds, not the batch
    assert (
        f"lane 0 partition p0: abandoned {EVENTS} events (stream seq 1-{EVENTS}, in its head), "
        "they will be redelivered at next start"
    ) in out
    assert re.search(
        rf"stopped in [0-9.]+ s: 1 batch\(es\) of {EVENTS} events abandoned; {EVENTS} events "
        rf"were not acknowledged and will be redelivered at next start \(p0: {EVENTS} between "
        rf"seq 1 and {EVENTS}\)",
        out,
    ), out
    assert first.survivors(timeout_s=5) == []

    second = start_up(data_dir=first.data_dir, env=ENV)
    second.wait_until_up()
    metrics = _stack_json(second)["metrics_url"]
    # Redelivered and processed: each event ran into the time limit again, into the DLQ.
    wait_for(lambda: _lane_counters(metrics) == (0, EVENTS, 0), timeout_s=40)
    second.process.send_signal(signal.SIGINT)
    assert second.wait_exit(timeout_s=30) == 0
    assert "nothing abandoned" in second.stdout.read_text()
