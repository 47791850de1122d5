"""The lane and its batch pipeline over in-memory twins: no server, no Ray.

What the tests pin: every event ends stored or in the DLQ and acknowledged; a retryable
failure waits and runs the same batch again (order and state hold); an event that cannot get
through is narrowed down and dead-lettered with stage and reason while the rest of its batch is
stored; a DLQ write that fails is retried, never dropped; a new owner of a partition gets every
unacknowledged event again and the state fence keeps counters exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.adapters.memory_stream import MemoryStream
from eventray.pipeline.batch import delivery_groups
from eventray.pipeline.lane import Abandoned
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import ScriptJob, TemplateExecutor
from eventray.pipeline.scripts.runner import ScriptResult
from eventray.pipeline.triggers.delivery import DeliveryGroup
from tests.unit.pipelinekit import ORG, STATE_KEY, FlakySink, Rig, body, ingested, rig


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def feed_and_drain(
    r: Rig, count: int, *, poison_bodies: dict[int, bytes] | None = None
) -> None:
    bodies = poison_bodies or {}
    r.items = r.stream.add(0, [ingested(n, bodies.get(n)) for n in range(count)])
    await r.lane.run_until(count, timeout_s=20)


def test_every_event_is_stored_evaluated_and_acknowledged() -> None:
    async def scenario() -> None:
        r = await rig()
        await feed_and_drain(r, 250)
        assert sorted(r.trackers("events")) == [f"e{n:04d}" for n in range(250)]
        assert r.rows()["dlq"] == []
        assert await r.lane.sources[0].pending() == 0  # all acknowledged
        assert r.state.dump()[STATE_KEY] == 250  # one increment per event, no more
        assert r.lane.stats.events == 250 and r.lane.stats.batches >= 3  # batches of 100

    run(scenario())


def test_a_retryable_failure_runs_the_same_batch_again_in_place() -> None:
    async def scenario() -> None:
        sink = FlakySink(retryable_failures=3)
        r = await rig(sink=sink)
        await feed_and_drain(r, 50)
        assert r.lane.stats.retries == 3
        assert r.trackers("events") == [f"e{n:04d}" for n in range(50)]  # in stream order
        assert r.state.dump()[STATE_KEY] == 50
        assert await r.lane.sources[0].pending() == 0

    run(scenario())


def test_an_event_that_cannot_be_stored_goes_to_the_dlq_and_the_rest_of_its_batch_is_stored() -> (
    None
):
    async def scenario() -> None:
        sink = FlakySink(poison=["e0042"])
        r = await rig(sink=sink)
        await feed_and_drain(r, 100)
        stored = r.trackers("events")
        assert "e0042" not in stored and len(stored) == 99
        [dead] = r.rows()["dlq"]
        assert dead["event_tracker_id"] == "e0042"
        assert dead["stage"] == "store"
        assert "cannot store a value of e0042" in dead["error"]
        assert dead["message"] == body(42).decode()  # the original body, to replay
        # The rules ran again without it: the counter counts the stored events only.
        assert r.state.dump()[STATE_KEY] == 99
        assert await r.lane.sources[0].pending() == 0
        assert r.lane.stats.narrowed >= 1 and r.lane.stats.failed == 1

    run(scenario())


def test_narrowing_stays_within_its_budget() -> None:
    async def scenario() -> None:
        sink = FlakySink(poison=[f"e{n:04d}" for n in range(0, 100, 3)])
        r = await rig(sink=sink)
        r.lane.narrow_budget = 4
        await feed_and_drain(r, 100)
        dead = {row["event_tracker_id"] for row in r.rows()["dlq"]}
        stored = set(r.trackers("events"))
        assert stored | dead == {f"e{n:04d}" for n in range(100)}  # nothing lost
        assert not stored & dead
        assert {f"e{n:04d}" for n in range(0, 100, 3)} <= dead  # every culprit is out
        assert any("not isolated further" in row["error"] for row in r.rows()["dlq"])
        assert sink.attempts < 60  # bounded, not one try per event

    run(scenario())


def test_a_dlq_write_that_fails_is_retried_never_dropped() -> None:
    async def scenario() -> None:
        sink = FlakySink(poison=["e0003"], refuse_dlq=True)
        r = await rig(sink=sink)
        r.items = r.stream.add(0, [ingested(n) for n in range(10)])
        r.lane.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if r.lane.stats.retries >= 5:
                break
        assert r.lane.stats.retries >= 5
        assert await r.lane.sources[0].pending() > 0  # not acknowledged while unwritten
        sink.refuse_dlq = False  # the store recovers
        for _ in range(500):
            await asyncio.sleep(0.01)
            if r.lane.stats.events + r.lane.stats.failed == 10:
                break
        await r.lane.stop()
        assert [row["event_tracker_id"] for row in r.rows()["dlq"]] == ["e0003"]
        assert len(r.trackers("events")) == 9
        assert await r.lane.sources[0].pending() == 0

    run(scenario())


def test_a_trigger_payload_larger_than_the_stream_takes_fails_its_event_only() -> None:
    async def scenario() -> None:
        r = await rig(max_payload=4096)
        huge = body(7, alert=True, note="x" * 10_000)
        small = body(8, alert=True)
        await feed_and_drain(r, 20, poison_bodies={7: huge, 8: small})
        [dead] = r.rows()["dlq"]
        assert (dead["event_tracker_id"], dead["stage"]) == ("e0007", "outbox")
        assert "exceeds the stream's limit of 4,096 bytes" in dead["error"]
        assert "e0007" not in r.trackers("events") and len(r.trackers("events")) == 19
        queued = list(r.stream.outbox().queued.values())
        assert [DeliveryGroup.from_bytes(m.body).jobs[0].event_tracker_id for m in queued] == [
            "e0008"
        ]

    run(scenario())


# A business rule whose pattern is read from the event: RE2 compiles it per event, so a
# pattern it refuses can only fail that event's evaluation.
MATCHING = [
    {"kind": "Rule", "id": "match", "orgId": ORG,
     "variables": [{"name": "hits", "type": "number", "default": 0}],
     "actions": [{"id": "hit", "type": "state", "op": "increment", "variable": "hits"}],
     "when": {"logic": "AND", "items": [{"type": "condition", "data": {
         "field": {"type": "event", "value": "data.text"}, "operator": "regex",
         "value": {"type": "event", "value": "data.pattern"}, "actions": ["hit"]}}]}},
    {"kind": "BusinessRule", "id": "match-a", "ruleId": "match", "orgId": ORG},
]  # fmt: skip


def test_an_event_a_business_rule_fails_on_goes_to_the_dlq_and_nothing_of_it_stands() -> None:
    async def scenario() -> None:
        r = await rig(documents=MATCHING)
        backreference = body(5, text="aa", pattern="(a)\\1")  # RE2 has no backreferences
        evil = body(6, text="a" * 100_000 + "!", pattern="(a+)+$")  # linear time in RE2
        fits = body(7, text="freezer-07", pattern="^freezer-\\d+$")
        started = time.perf_counter()
        await feed_and_drain(r, 30, poison_bodies={5: backreference, 6: evil, 7: fits})
        assert time.perf_counter() - started < 10  # Python's re would take ages on e0006
        [dead] = r.rows()["dlq"]
        assert (dead["event_tracker_id"], dead["stage"]) == ("e0005", "rules")
        assert dead["error"].startswith(
            "business rule 'match-a' (rule 'match'): invalid regex '(a)\\\\1': "
            "invalid escape sequence: \\1: backreferences are not supported"
        ), dead["error"]
        assert dead["message"] == backreference.decode()  # the original body, to replay
        assert "e0005" not in r.trackers("events") and len(r.trackers("events")) == 29
        # The batch was evaluated again without it: the other rule did not count it either.
        assert r.state.dump()[STATE_KEY] == 29
        assert r.state.dump()[f"state:{ORG}:match-a:hits"] == 1  # e0007 only
        assert "e0005" not in r.trackers("logs_rule")
        assert await r.lane.sources[0].pending() == 0
        assert r.lane.stats.failed == 1

    run(scenario())


class _Raising(TemplateExecutor):
    """An executor with a bug that only some payloads trigger (raises instead of failing the
    event): the head is narrowed down to them."""

    def run(self, jobs: Sequence[ScriptJob], *, trace: bool = False) -> list[ScriptResult]:
        if any(b'"boom"' in job.body for job in jobs):
            raise RuntimeError("executor bug")
        return super().run(jobs, trace=trace)


def test_an_exception_in_the_head_is_narrowed_to_the_events_that_raise_it() -> None:
    async def scenario() -> None:
        r = await rig(executor=_Raising(ScriptCache()))
        await feed_and_drain(r, 60, poison_bodies={13: body(13, x="boom"), 40: body(40, x="boom")})
        dead = {row["event_tracker_id"]: row for row in r.rows()["dlq"]}
        assert set(dead) == {"e0013", "e0040"}
        assert dead["e0013"]["stage"] == "process"
        assert "RuntimeError: executor bug" in dead["e0013"]["error"]
        assert len(r.trackers("events")) == 58
        assert await r.lane.sources[0].pending() == 0

    run(scenario())


def test_a_new_owner_gets_every_unacknowledged_event_and_the_fence_keeps_counts_exact() -> None:
    async def scenario() -> None:
        stream, state = MemoryStream(), MemoryStateStore()
        first = await rig(stream=stream, state=state)
        first.stream.add(0, [ingested(n) for n in range(30)])
        await first.lane.run_until(30, timeout_s=20)
        # Three more arrive; the owner dies after evaluating and committing state but before
        # acknowledging: the next owner must not count them twice.
        stream.add(0, [ingested(n) for n in range(30, 33)])
        source = first.lane.sources[0]
        items = await source.fetch(10, timeout_s=1, linger_s=0.01)
        processed = first.pipeline.head(items)
        await first.pipeline.tail(0, items, processed)  # stored and committed, not acked
        assert state.dump()[STATE_KEY] == 33
        second = await rig(stream=stream, state=state)
        await second.lane.run_until(3, timeout_s=20)
        assert state.dump()[STATE_KEY] == 33  # the replay changed nothing
        assert await second.lane.sources[0].pending() == 0
        assert second.lane.stats.events == 3  # delivered again, stored again (rows collapse)

    run(scenario())


def test_a_bounded_stop_abandons_a_stuck_tail_unacknowledged_and_the_next_owner_gets_it() -> None:
    async def scenario() -> None:
        stream, state = MemoryStream(), MemoryStateStore()
        stuck = await rig(stream=stream, state=state, sink=FlakySink(retryable_failures=10**9))
        added = stream.add(0, [ingested(n) for n in range(30)])
        stuck.lane.start()
        while stuck.lane.stats.retries < 3:  # the store is down: the tail retries in place
            await asyncio.sleep(0.005)
        started = time.monotonic()
        abandoned = await stuck.lane.stop(timeout_s=0.2)
        assert time.monotonic() - started < 1.5
        assert abandoned == [Abandoned(0, 30, added[0].seq or 0, added[-1].seq or 0, "tail")]
        assert await stuck.lane.sources[0].pending() == 30  # nothing acknowledged
        second = await rig(stream=stream, state=state)
        await second.lane.run_until(30, timeout_s=20)
        assert sorted(second.trackers("events")) == [f"e{n:04d}" for n in range(30)]
        assert state.dump()[STATE_KEY] == 30
        assert await second.lane.sources[0].pending() == 0

    run(scenario())


def test_a_bounded_stop_abandons_a_head_stuck_in_blocking_work() -> None:
    release = threading.Event()

    class _Stuck(TemplateExecutor):
        def run(self, jobs: Sequence[ScriptJob], *, trace: bool = False) -> list[ScriptResult]:
            release.wait(10)  # a script that does not come back
            return super().run(jobs, trace=trace)

    async def scenario() -> None:
        r = await rig(executor=_Stuck(ScriptCache()))
        pool = ThreadPoolExecutor(max_workers=1)

        async def on_thread(fn: Any, *args: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

        r.lane.run_sync = on_thread
        added = r.stream.add(0, [ingested(n) for n in range(5)])
        r.lane.start()
        while not r.lane._in_hand:
            await asyncio.sleep(0.005)
        started = time.monotonic()
        abandoned = await r.lane.stop(timeout_s=0.2)
        assert time.monotonic() - started < 1.5
        assert abandoned == [Abandoned(0, 5, added[0].seq or 0, added[-1].seq or 0, "head")]
        assert r.rows()["events"] == [] and await r.lane.sources[0].pending() == 5
        release.set()
        pool.shutdown(wait=True)

    run(scenario())


def test_an_unbounded_stop_finishes_the_batches_in_hand() -> None:
    async def scenario() -> None:
        r = await rig(sink=FlakySink(retryable_failures=20))
        r.stream.add(0, [ingested(n) for n in range(30)])
        r.lane.start()
        while r.lane.stats.retries < 3:
            await asyncio.sleep(0.005)
        assert await r.lane.stop() == []
        assert len(r.trackers("events")) == 30
        assert await r.lane.sources[0].pending() == 0

    run(scenario())


def test_delivery_groups_are_encoded_once_and_read_back_equal() -> None:
    async def scenario() -> None:
        r = await rig()
        items = r.stream.add(0, [ingested(1, body(1, alert=True))])
        processed = r.pipeline.head(items)
        [(tracker, group)] = delivery_groups(processed)
        assert tracker == "e0001"
        assert DeliveryGroup.from_bytes(group.to_bytes()) == group

    run(scenario())


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"device": "NOPE", "n": 1}'])
def test_bodies_that_bind_to_nothing_go_to_the_dlq_at_bind(raw: bytes) -> None:
    async def scenario() -> None:
        r = await rig()
        await feed_and_drain(r, 5, poison_bodies={2: raw})
        [dead] = r.rows()["dlq"]
        assert (dead["event_tracker_id"], dead["stage"]) == ("e0002", "bind")
        assert len(r.trackers("events")) == 4

    run(scenario())


def test_a_hinted_asset_is_trusted_only_inside_its_data_sources_tenant() -> None:
    async def scenario() -> None:
        r = await rig()
        good = ingested(1)
        hinted = type(good)(**{**_fields(good), "asset_id": "dev-1", "body": b'{"n": 1}'})
        # An unknown hint is not trusted: the body is bound instead (here it names no asset).
        stranger = type(good)(
            **{**_fields(good), "event_tracker_id": "x", "asset_id": "nope", "body": b'{"n": 2}'}
        )
        processed = r.pipeline.head([hinted, stranger])
        assert [e.asset.id for e in processed.events] == ["dev-1"]  # bound without parsing
        assert [(f.event_tracker_id, f.stage) for f in processed.failures] == [("x", "bind")]

    run(scenario())


def _fields(item: Any) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__slots__}


def _without_the_device() -> Any:
    """The tenant's catalog before its device was applied (revision 1)."""
    from dataclasses import replace

    from eventray.pipeline.catalog import build_catalog
    from eventray.pipeline.loader import entity_from_dict
    from tests.unit.pipelinekit import DOCUMENTS

    issues: list[Any] = []
    documents = [d for d in DOCUMENTS if d["kind"] != "Asset"]
    entities = [entity_from_dict("test", d, issues) for d in documents]
    return replace(build_catalog([("test", e) for e in entities if e is not None]), revision=1)


def test_events_accepted_under_a_newer_config_wait_for_the_lane_to_catch_up() -> None:
    """The ingress knew the device (revision 2) before the lane's change notice came: the
    lane catches up before the batch, so no event meets the old catalog and the DLQ."""
    from dataclasses import replace

    from tests.unit.pipelinekit import catalog

    async def scenario() -> None:
        r = await rig()
        r.pipeline.use(_without_the_device())
        asked: list[int] = []

        async def catch_up(revision: int) -> None:
            asked.append(revision)
            r.pipeline.use(replace(catalog(), revision=2))

        r.lane.catch_up = catch_up
        r.stream.add(0, [replace(ingested(n), revision=2) for n in range(30)])
        await r.lane.run_until(30, timeout_s=20)
        assert r.rows()["dlq"] == []
        assert sorted(r.trackers("events")) == [f"e{n:04d}" for n in range(30)]
        assert asked == [2]

    run(scenario())


def test_a_revision_the_config_never_reaches_is_asked_for_once() -> None:
    """A stream kept across a reset config store holds revisions the store never reaches
    again: the lane asks once and goes on with what it has (here the device is unknown, so
    the events go to the DLQ at bind, as they would have)."""
    from dataclasses import replace

    async def scenario() -> None:
        r = await rig()
        r.pipeline.use(_without_the_device())
        asked: list[int] = []

        async def catch_up(revision: int) -> None:
            asked.append(revision)
            raise RuntimeError("the config store is unreachable")

        r.lane.catch_up = catch_up
        r.stream.add(0, [replace(ingested(n), revision=7) for n in range(250)])
        await r.lane.run_until(250, timeout_s=20)
        assert asked == [7] and r.lane.stats.batches >= 3
        assert "catching up with config revision 7" in r.lane.stats.last_error
        assert {row["stage"] for row in r.rows()["dlq"]} == {"bind"}
        assert len(r.rows()["dlq"]) == 250

    run(scenario())


def test_a_partition_moves_between_lanes_without_loss_duplicates_or_reordering() -> None:
    """The balancer's move: the losing lane finishes and acknowledges its batches in hand,
    the gaining lane continues from there; the rule state's counter stays exact."""

    async def scenario() -> None:
        first = await rig()
        second = await rig(stream=first.stream, state=first.state, sink=first.sink)
        first.stream.add(0, [ingested(n) for n in range(600)])
        first.lane.start()
        while first.lane.stats.events < 100:
            await asyncio.sleep(0.001)
        source = await first.lane.release(0)
        assert source is not None and 0 not in first.lane.sources
        assert await source.pending() == 600 - first.lane.stats.events  # nothing half-done
        await source.close()
        second.lane.acquire(0, await first.stream.source(0))
        second.lane.start()
        while first.lane.stats.events + second.lane.stats.events < 600:
            await asyncio.sleep(0.005)
        await second.lane.stop()
        await first.lane.stop()
        assert first.trackers("events") == [f"e{n:04d}" for n in range(600)]  # once, in order
        assert first.state.dump()[STATE_KEY] == 600
        assert second.lane.stats.by_partition[0] == 600 - first.lane.stats.by_partition[0]
        assert await second.lane.sources[0].pending() == 0

    run(scenario())


def test_a_lane_added_empty_pulls_the_partitions_it_is_given_later() -> None:
    """The scaling adds a lane with no partition, starts it, then moves partitions to it:
    what it acquires must start pulling at once (not only after a restart)."""

    async def scenario() -> None:
        first = await rig()
        second = await rig(stream=first.stream, state=first.state, sink=first.sink)
        released = await second.lane.release(0)  # the new lane owns nothing yet
        assert released is not None
        await released.close()
        second.lane.start()
        assert second.lane.running
        first.stream.add(0, [ingested(n) for n in range(50)])
        second.lane.acquire(0, await first.stream.source(0))
        for _ in range(2000):
            if second.lane.stats.events == 50:
                break
            await asyncio.sleep(0.005)
        await second.lane.stop()
        assert not second.lane.running
        assert first.trackers("events") == [f"e{n:04d}" for n in range(50)]

    run(scenario())
