"""The per-stage topology: scripts in a pool of script-executor actors and rules in rule actors,
each scaled apart from the lanes (``pipeline.script_actors``, ``pipeline.rule_actors``).

The module's stack runs 2 script actors and 1 rule actor for 2 partitions on 1 lane. Nothing
accepted may be lost or stored twice when a pool actor dies or a pool is resized mid-stream
(:func:`tests.e2e.test_fault.kill_mid_stream` checks every event and the rule state), and the
pool must answer exactly as a lane's own executor would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import ray

from eventray.actors.script_pool import ScriptPoolClient
from eventray.cluster.stack import Stack
from eventray.pipeline.catalog import catalog_from_store
from eventray.pipeline.errors import EventrayError
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import ScriptJob, TemplateExecutor
from eventray.testing.simulator import DeviceSimulator
from eventray.testing.sink import WebhookSink
from tests.e2e.conftest import wait_for
from tests.e2e.test_fault import kill_mid_stream
from tests.e2e.test_replay import BROKEN, send, tenant

pytestmark = pytest.mark.ray

STACK_PIPELINE = {"script_actors": 2, "rule_actors": 1}
# Script executors declare a lane's CPUs (0.5 each): the resize to 4 of them needs a budget
# beyond the 2 logical CPUs the other modules' local heads advertise.
STACK_RAY = {"num_cpus": 4}
Select = Callable[[str], list[dict[str, Any]]]


def _catalog(stack: Stack) -> Any:
    store = stack.wiring.config_store()
    try:
        return catalog_from_store(store)[0]
    finally:
        store.close()


def _pool_members(stack: Stack) -> list[list[str]]:
    return [lane["script_host"]["pool"] for lane in stack.status()["lanes"]]


def test_the_pool_answers_every_template_as_a_lane_s_own_executor_does(stack: Stack) -> None:
    """Every sample template (JSON, both LoRaWAN codecs, the EM300 binary frame) against every
    simulated body: the pool's results equal those of the in-lane executor, errors included."""
    assert stack.settings.pipeline.script_actors == 2
    assert sorted(stack.stage_actors("scripts")) == ["scripts-0", "scripts-1"]
    catalog = _catalog(stack)
    bodies = [u.body for u in DeviceSimulator(catalog, seed=5, bad_ratio=0.2).take(60)]
    jobs = [ScriptJob(t, body) for t in catalog.templates.values() for body in bodies]
    local = TemplateExecutor(ScriptCache()).run(jobs)
    pool = ScriptPoolClient()
    assert pool.run(jobs) == local
    assert sum("r" in r for r in local) >= len(bodies)  # most bodies meet their template
    assert any("e" in r for r in local)  # and the errors are compared too
    used = ray.get([a.stats.remote() for a in stack.stage_actors("scripts").values()])
    assert sum(s["events"] for s in used) >= len(jobs)


def test_a_broken_template_still_fails_its_event_to_the_dlq_with_the_same_error(
    stack: Stack, select: Select, sink: WebhookSink
) -> None:
    assert stack.wait_revision(stack.apply(tenant("alpha", sink, BROKEN)))
    good = send(stack, "alpha", 1)
    bad = send(stack, "alpha", 2, bad=True)
    sql = (
        "SELECT event_tracker_id, stage, error FROM {db}.dlq FINAL "
        f"WHERE event_tracker_id IN ('{good}', '{bad}')"
    )
    wait_for(lambda: len(select(sql)) == 1)
    (row,) = select(sql)
    template = _catalog(stack).templates["tpl-rp-alpha"]
    (local,) = TemplateExecutor(ScriptCache()).run([ScriptJob(template, b'{"n": 2, "bad": true}')])
    assert row["event_tracker_id"] == bad
    assert (row["stage"], row["error"]) == (local["e"]["stage"], local["e"]["message"])
    assert "bad reading 2" in row["error"]
    stored = f"SELECT count() AS n FROM {{db}}.events FINAL WHERE event_tracker_id = '{good}'"
    wait_for(lambda: select(stored) == [{"n": 1}])


def test_killing_a_script_actor_mid_stream_loses_and_doubles_nothing(
    stack: Stack, select: Select
) -> None:
    victim = stack.stage_actors("scripts")["scripts-0"]
    kill_mid_stream(stack, select, lambda: ray.kill(victim, no_restart=False), day=11)


def test_scaling_the_script_pool_up_and_down_mid_stream_loses_nothing(
    stack: Stack, select: Select
) -> None:
    def resize() -> None:
        assert stack.scale_stage("scripts", 4) == 4
        assert len(stack.stage_actors("scripts")) == 4
        assert stack.scale_stage("scripts", 1) == 1

    kill_mid_stream(stack, select, resize, day=12)
    (left,) = stack.stage_actors("scripts")
    assert left == "scripts-0"
    # The lanes look the pool up by name every 2 s; a loaded machine can take longer.
    wait_for(lambda: all(members == [left] for members in _pool_members(stack)), timeout_s=60)


def test_scaling_the_rule_actors_mid_stream_keeps_one_owner_per_partition(
    stack: Stack, select: Select
) -> None:
    """The counting rule's state stays exact (each critical reading counted once) while the
    rule actors go from 1 to 2; then each partition has exactly one owner."""
    before = stack.rule_layout
    kill_mid_stream(stack, select, lambda: stack.scale_stage("rules", 2), day=13)
    assert stack.rule_layout is not None and before is not None
    assert stack.rule_layout == (before[0] + 1, 2)
    owners = ray.get([a.stats.remote() for a in stack.stage_actors("rules").values()])
    owned = sorted(p for s in owners for p in s["partitions"])
    assert owned == list(range(stack.settings.pipeline.partitions))


def test_scaling_refuses_what_cannot_work(stack: Stack) -> None:
    with pytest.raises(EventrayError, match="unknown stage 'router'"):
        stack.scale_stage("router", 2)
    with pytest.raises(EventrayError, match="at least 1 actor"):
        stack.scale_stage("scripts", 0)
    with pytest.raises(EventrayError, match=r"exceed pipeline\.partitions = 2"):
        stack.scale_stage("rules", 3)
