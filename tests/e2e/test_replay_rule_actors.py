"""A fresh replay when rule partitions are actors of their own (``rules_in_lane = false``):
the reset marker travels from the lane to the partition's rule actor, which resets the state
under the same fence."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from eventray.cluster.stack import Stack
from eventray.testing.sink import WebhookSink
from tests.e2e.conftest import wait_for
from tests.e2e.test_replay import PASS, cli, send, state, tenant

pytestmark = pytest.mark.ray

STACK_PIPELINE = {"rules_in_lane": False, "partitions": 2, "lanes": 1}


def test_a_fresh_replay_resets_and_rebuilds_state_in_the_rule_actors(
    stack: Stack, sink: WebhookSink
) -> None:
    assert stack.wait_revision(stack.apply(tenant("alpha", sink, PASS)))
    for n in (1, 2):
        send(stack, "alpha", n)
    time.sleep(0.05)
    split = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.05)
    for n in range(3, 7):
        send(stack, "alpha", n)
    wait_for(lambda: state(stack, "rp-alpha") == 6)
    (fresh,) = cli(stack, "replay", "--org", "rp-alpha", "--since", split, "--state", "fresh",
                   "--wait", "60")  # fmt: skip
    assert (fresh["events"], fresh["processed"]) == (4, True)
    assert state(stack, "rp-alpha") == 4  # reset by the rule actor, then events 3..6 once
    (whole,) = cli(stack, "replay", "--org", "rp-alpha", "--since", "2000-01-01T00:00:00Z",
                   "--state", "fresh", "--wait", "60")  # fmt: skip
    assert whole["events"] == 6 and state(stack, "rp-alpha") == 6
