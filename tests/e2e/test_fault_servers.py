"""Fault tolerance of the embedded servers: nats-server or Valkey is killed (``kill -9``)
mid-stream; the stack's supervision starts it again on its port and data directory, the actors
reconnect by themselves, and nothing accepted is lost or counted twice."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from eventray.cluster.stack import Stack
from tests.e2e.conftest import nats_refusals
from tests.e2e.test_cold_chain import post, reading
from tests.e2e.test_fault import kill_mid_stream

pytestmark = pytest.mark.ray


def _service(stack: Stack, name: str) -> Any:
    [service] = [s for s in stack.services if s.name == name]
    return service


def _kill_and_recover(
    stack: Stack,
    select: Callable[[str], list[dict[str, Any]]],
    name: str,
    *,
    day: int,
    all_accepted: bool,
) -> None:
    victim = _service(stack, name)
    retries = sum(lane["retries"] for lane in stack.status()["lanes"])
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(victim.process.pid, signal.SIGKILL)

    refused = kill_mid_stream(stack, select, kill, day=day, all_accepted=all_accepted)
    revived = _service(stack, name)
    assert revived.process.pid != victim.process.pid, "the server should have been restarted"
    assert revived.port == victim.port and revived.process.poll() is None
    lanes = stack.status()["lanes"]
    retried = sum(lane["retries"] for lane in lanes) > retries
    assert retried or refused, "the kill should have interrupted the pipeline"
    assert all(lane["uptime_s"] > time.monotonic() - killed_at[0] for lane in lanes), (
        "the lanes should have kept running (no restart of the stack)"
    )
    answer = post(stack, reading("FRZ-0001", 50 + day, -19.0))  # the pipeline runs on
    assert answer.status_code == 201
    tracker = answer.json()["eventTrackerId"]
    sql = f"SELECT count() AS n FROM {{db}}.events FINAL WHERE event_tracker_id = '{tracker}'"
    deadline = time.monotonic() + 30
    while int(select(sql)[0]["n"]) != 1:
        assert time.monotonic() < deadline, "an event posted after the recovery was not stored"
        time.sleep(0.2)


def test_killing_nats_server_mid_stream_loses_and_doubles_nothing(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    # While the stream is down the ingress answers 503 for what it cannot append.
    _kill_and_recover(stack, select, "nats-server", day=5, all_accepted=False)


def test_killing_valkey_mid_stream_loses_and_doubles_nothing(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    # Rule state is the only thing on Valkey: the ingress accepts everything meanwhile.
    _kill_and_recover(stack, select, "valkey-server", day=6, all_accepted=True)


def test_no_role_was_refused_anything_on_the_way(stack: Stack) -> None:
    """Everything above ran on the actors' own NATS users (:mod:`eventray.cluster.roles`)."""
    assert nats_refusals(stack) == []
