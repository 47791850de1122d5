"""Fault tolerance with rules evaluated in the lanes: the lane itself (its rule partitions, its
script host child, its unacknowledged batches) dies mid-stream; JetStream redelivers after
``ack_wait`` and the sequence fence keeps every counter exact."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import ray

from eventray.cluster.stack import Stack
from tests.e2e.conftest import nats_refusals
from tests.e2e.test_fault import kill_mid_stream

pytestmark = pytest.mark.ray

STACK_PIPELINE = {"rules_in_lane": True}


def test_killing_a_lane_with_in_lane_rules_loses_and_doubles_nothing(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert stack.settings.pipeline.rules_in_lane
    assert not any(name.startswith("rules-") for name in stack.actors)
    [lane] = stack.lanes()
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        ray.kill(lane, no_restart=False)  # Ray restarts the process; the supervisor the work

    kill_mid_stream(stack, select, kill, day=3)
    [status] = stack.status()["lanes"]
    assert status["uptime_s"] < time.monotonic() - killed_at[0], "the lane should have restarted"


def test_no_role_was_refused_anything_on_the_way(stack: Stack) -> None:
    """Everything above ran on the actors' own NATS users (:mod:`eventray.cluster.roles`)."""
    assert nats_refusals(stack) == []
