"""DLQ redrive over the in-memory twins: the real lane and pipeline, no server, no Ray.

What the tests pin: a redriven event keeps its eventTrackerId and goes through the normal
pipeline (stored once, counted once by its rule); an entry is redriven once, whether asked
again later (the durable record) or a moment after a redrive that stopped between the stream
and the record (the copy's message id); an event that fails again is a new DLQ entry beside the
redriven one; ingress refusals at ``bind`` are redriven once an asset binds them; a caller's
scope bounds what is read and redriven.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventray.pipeline.errors import RetryableError
from eventray.pipeline.replay import (
    InvalidRequest,
    OutOfScope,
    RedriveRecord,
    RedriveRequest,
    Scope,
    redrive_msg_id,
)
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, refusal_row
from eventray.pipeline.triggers.delivery import DeliveryGroup
from eventray.pipeline.triggers.requests import DeliveryJob
from tests.unit.pipelinekit import ORG, SOURCE
from tests.unit.replaykit import (
    BASE_MS,
    BROKEN,
    EVERYONE,
    ORG_B,
    PASS,
    SCOPE_A,
    STATE_A,
    STATE_B,
    World,
    build,
    event,
    world,
)

ALL = RedriveRequest(everything=True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def broken_world() -> World:
    """org-a's template throws on ``bad``: events 2 and 5 of 1..6 are in the DLQ."""
    w = await world(BROKEN)
    await w.send(*(event(n, bad=n in (2, 5)) for n in range(1, 7)))
    await w.drain()
    assert sorted(r["event_tracker_id"] for r in w.rows("dlq")) == ["e0002", "e0005"]
    assert w.state()[STATE_A] == 4
    return w


def test_a_redriven_event_keeps_its_tracker_id_and_is_processed_once_by_the_pipeline() -> None:
    async def scenario() -> None:
        w = await broken_world()
        w.apply(build(PASS, revision=2))  # the template is fixed
        report = await w.service.redrive(EVERYONE, ALL, requested_by="ops")
        assert [(i.entry.event_tracker_id, i.outcome) for i in report.items] == [
            ("e0002", "redriven"),
            ("e0005", "redriven"),
        ]
        copies = w.rig.stream.log(0)[-2:]
        assert [c.event_tracker_id for c in copies] == ["e0002", "e0005"]
        assert [c.revision for c in copies] == [2, 2]  # a lane catches up with the fix first
        latencies = len(w.rig.lane.stats.latencies_ms)
        await w.drain()
        assert len(w.rig.lane.stats.latencies_ms) == latencies  # a copy's are its event's
        stored = w.events_final()
        assert sorted(stored) == [f"e{n:04d}" for n in range(1, 7)]
        assert orjson.loads(stored["e0005"]["payload"]) == {"device": "D1", "n": 5, "bad": True}
        assert stored["e0005"]["stream_seq"] == report.items[1].stream_seq
        assert w.state()[STATE_A] == 6  # counted once each, like any event

        # The entries stay, with their records: the history of what happened to them.
        history = await w.service.dead_letters(EVERYONE, ALL)
        assert [(e.event_tracker_id, e.redrive is not None) for e in history] == [
            ("e0002", True),
            ("e0005", True),
        ]
        record = history[0].redrive
        assert record is not None
        assert (record.redrive_id, record.requested_by) == (report.redrive_id, "ops")
        assert record.stream_seq == report.items[0].stream_seq
        assert record.msg_id == redrive_msg_id(history[0])

        # Asked again, at once or after the stream's duplicate window: nothing is redriven.
        again = await w.service.redrive(EVERYONE, ALL)
        assert again.items == []
        w.rig.stream.expire_duplicates()
        assert (await w.service.redrive(EVERYONE, ALL)).items == []
        await w.drain()
        assert w.state()[STATE_A] == 6

    run(scenario())


class RecordFailsOnce:
    """The store's twin, whose first record write fails (a redrive that stopped between
    the stream's answer and its record)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    async def find(self, query: Any) -> Any:
        return await self.inner.find(query)

    async def record(self, records: Sequence[RedriveRecord]) -> None:
        if not self.failed:
            self.failed = True
            raise RetryableError("the store is restarting")
        await self.inner.record(records)


def test_a_redrive_cut_before_its_record_and_run_again_appends_each_copy_once() -> None:
    async def scenario() -> None:
        w = await broken_world()
        w.apply(build(PASS))
        w.service.redriver._store = RecordFailsOnce(w.dead)
        with pytest.raises(RetryableError):
            await w.service.redrive(EVERYONE, ALL)
        in_stream = len(w.rig.stream.log(0))
        again = await w.service.redrive(EVERYONE, ALL)
        assert [(i.outcome, i.duplicate) for i in again.items] == [("redriven", True)] * 2
        assert len(w.rig.stream.log(0)) == in_stream  # the stream kept the first copies
        await w.drain()
        assert w.state()[STATE_A] == 6
        assert (await w.service.redrive(EVERYONE, ALL)).items == []

    run(scenario())


def test_an_event_that_fails_again_is_a_new_entry_beside_the_redriven_one() -> None:
    async def scenario() -> None:
        w = await broken_world()
        first = await w.service.redrive(EVERYONE, ALL)  # not fixed yet
        await w.drain()
        entries = await w.service.dead_letters(EVERYONE, ALL)
        assert [(e.event_tracker_id, e.redrive is not None) for e in entries] == [
            ("e0002", True),
            ("e0002", False),
            ("e0005", True),
            ("e0005", False),
        ]
        again = [e for e in entries if e.redrive is None]
        assert [e.stream_seq for e in again] == [i.stream_seq for i in first.items]
        assert "bad reading 2" in again[0].error
        w.apply(build(PASS))
        second = await w.service.redrive(EVERYONE, ALL)
        assert [i.entry.stream_seq for i in second.items] == [e.stream_seq for e in again]
        await w.drain()
        assert sorted(w.events_final()) == [f"e{n:04d}" for n in range(1, 7)]
        assert w.state()[STATE_A] == 6

    run(scenario())


def test_filters_select_entries_and_a_dry_run_changes_nothing() -> None:
    async def scenario() -> None:
        w = await broken_world()
        w.apply(build(PASS))
        stage = w.rows("dlq")[0]["stage"]
        one = RedriveRequest(event_tracker_id="e0005")
        later = RedriveRequest(since_ms=BASE_MS + 3000, until_ms=BASE_MS + 9000)
        other_stage = RedriveRequest(stage="bind")
        dry = await w.service.redrive(EVERYONE, RedriveRequest(stage=stage), dry_run=True)
        assert [(i.entry.event_tracker_id, i.outcome) for i in dry.items] == [
            ("e0002", "would-redrive"),
            ("e0005", "would-redrive"),
        ]
        assert (await w.service.redrive(EVERYONE, other_stage, dry_run=True)).items == []
        in_stream = len(w.rig.stream.log(0))
        assert len(w.rig.stream.log(0)) == in_stream
        assert w.rows("dlq_redrive") == []
        for request, expected in ((one, ["e0005"]), (later, ["e0005"])):
            found = await w.service.redrive(EVERYONE, request, dry_run=True)
            assert [i.entry.event_tracker_id for i in found.items] == expected
        report = await w.service.redrive(EVERYONE, one)
        assert [i.entry.event_tracker_id for i in report.items] == ["e0005"]
        pending = await w.service.dead_letters(EVERYONE, ALL, redriven=False)
        assert [e.event_tracker_id for e in pending] == ["e0002"]
        limited = await w.service.redrive(EVERYONE, RedriveRequest(everything=True, limit=1))
        assert [i.entry.event_tracker_id for i in limited.items] == ["e0002"]
        with pytest.raises(InvalidRequest):
            await w.service.redrive(EVERYONE, RedriveRequest())  # no filter, not everything
        with pytest.raises(InvalidRequest):
            await w.service.redrive(EVERYONE, RedriveRequest(since_ms=5, until_ms=5))

    run(scenario())


def test_a_redrive_for_one_tenant_leaves_another_tenants_dlq_untouched() -> None:
    async def scenario() -> None:
        w = await world(BROKEN)
        await w.send(
            event(1, bad=True),
            event(1, org=ORG_B, device="NOPE"),  # org-b: no asset binds it
            event(2, org=ORG_B),
        )
        await w.drain()
        w.apply(build(PASS))
        assert [e.org_id for e in await w.service.dead_letters(EVERYONE, ALL)] == [ORG_B, ORG]
        seen_by_a = await w.service.dead_letters(SCOPE_A, ALL)
        assert [e.event_tracker_id for e in seen_by_a] == ["e0001"]
        with pytest.raises(OutOfScope):
            await w.service.redrive(SCOPE_A, RedriveRequest(org_id=ORG_B))
        with pytest.raises(OutOfScope):  # an unknown one reads the same
            await w.service.redrive(SCOPE_A, RedriveRequest(org_id="org-zzz"))
        report = await w.service.redrive(SCOPE_A, ALL)
        assert [i.entry.event_tracker_id for i in report.items] == ["e0001"]
        await w.drain()
        pending = await w.service.dead_letters(EVERYONE, ALL, redriven=False)
        assert [(e.org_id, e.event_tracker_id) for e in pending] == [(ORG_B, "b0001")]
        assert w.state()[STATE_B] == 1

        # org-b's own caller: its entry binds to no asset yet, so it is skipped and stays.
        scope_b = Scope(w.catalog.orgs[ORG_B].path_key)
        skipped = await w.service.redrive(scope_b, ALL)
        assert [(i.outcome, i.reason[:22]) for i in skipped.items] == [
            ("skipped", "binds to no asset yet:")
        ]
        nope = {"kind": "Asset", "id": "dev-nope", "orgId": ORG_B, "assetUUID": "NOPE",
                "name": "n", "templateId": "pass-b", "routeGroupIds": ["rg-b"]}  # fmt: skip
        w.apply(build(PASS, [nope]))
        redriven = await w.service.redrive(scope_b, ALL)
        assert [(i.outcome, i.partition) for i in redriven.items] == [("redriven", 0)]
        await w.drain()
        assert w.events_final()["b0001"]["asset_id"] == "dev-nope"
        assert w.state()[STATE_B] == 2

    run(scenario())


def _refusal(w: World, tracker: str, body: dict[str, Any], stage: str = "bind") -> None:
    context = RowContext.from_catalog(w.catalog, RetentionPolicy())
    at = datetime.fromtimestamp(BASE_MS / 1000 + 30, UTC)
    row = refusal_row(
        event_tracker_id=tracker, org_id=ORG, data_source_id=SOURCE,
        body=orjson.dumps(body), reason="no asset with assetUUID 'D9'", at=at, context=context,
        stage=stage,
    )  # fmt: skip
    w.rig.sink.rows["events_raw"].append(row)


def test_ingress_refusals_at_bind_are_redriven_once_an_asset_binds_them() -> None:
    async def scenario() -> None:
        w = await world()
        _refusal(w, "r1", {"device": "D9", "n": 9})
        _refusal(w, "r2", {"device": "D9", "n": 10}, stage="auth")  # a 401: never
        found = await w.service.dead_letters(EVERYONE, ALL)
        assert [(e.source, e.event_tracker_id, e.stage) for e in found] == [
            ("events_raw", "r1", "bind")
        ]
        skipped = await w.service.redrive(EVERYONE, ALL)
        assert [i.outcome for i in skipped.items] == ["skipped"]
        d9 = {"kind": "Asset", "id": "dev-9", "orgId": ORG, "assetUUID": "D9", "name": "9",
              "templateId": "pass", "routeGroupIds": ["rg"]}  # fmt: skip
        w.apply(build(PASS, [d9]))
        report = await w.service.redrive(
            EVERYONE, RedriveRequest(sources=("events_raw",), everything=True)
        )
        assert [(i.entry.event_tracker_id, i.outcome) for i in report.items] == [("r1", "redriven")]
        await w.drain()
        stored = w.events_final()["r1"]
        assert (stored["asset_id"], stored["created"]) == ("dev-9", "2026-03-01 08:00:00.000")
        assert w.state()[STATE_A] == 1
        assert (await w.service.redrive(EVERYONE, ALL)).items == []

    run(scenario())


def test_a_failed_delivery_goes_back_on_the_trigger_queue_and_store_refusals_stay() -> None:
    async def scenario() -> None:
        w = await world()
        job = DeliveryJob("e0001", ORG, "0001", "hook", None, {"event": {"n": 1}}, "count-a", "x")
        dlq = w.rig.sink.rows["dlq"]
        dlq.append((BASE_MS, ORG, "0001", "e0001", 90, "dev-1", "", "trigger:hook",
                    "HTTP 503", 0, job.to_bytes().decode(), "text", 1, 77))  # fmt: skip
        dlq.append((BASE_MS, ORG, "0001", "e0002", 90, "", "", "store:events",
                    "refused", 0, "{}", "text", 1, 0))  # fmt: skip
        report = await w.service.redrive(EVERYONE, ALL)
        outcomes = {i.entry.stage: (i.outcome, i.reason) for i in report.items}
        assert outcomes["store:events"] == ("skipped", "a row the store refused, not an event")
        assert outcomes["trigger:hook"][0] == "redriven"
        queued = w.rig.stream.outbox().queued["redrive:e0001:dlq:trigger:hook:77"]
        assert DeliveryGroup.from_bytes(queued.body).jobs == (job,)
        assert [i.entry.stage for i in (await w.service.redrive(EVERYONE, ALL)).items] == [
            "store:events"
        ]

    run(scenario())
