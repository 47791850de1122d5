"""Replaying a range of the stream over the in-memory twins: the real lane and pipeline.

What the tests pin: replayed events replace their stored rows (one row per eventTrackerId,
the replay's version); ``keep`` evaluates no rule (state and rule logs untouched), ``fresh``
resets the organizations' rule state and rebuilds it from the range, each event once; triggers
are sent again only when asked, as new deliveries; copies are never taken for events by a
later replay; the lanes' sequence fence treats copies and reset markers as the messages they
are (a redelivered marker resets nothing, a redelivered copy counts once); a reset marker
applies in stream order inside a fetched batch; the caller's scope bounds what is read, copied
and reset.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from eventray.pipeline.batch import split_at_controls
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.processor import Ingested
from eventray.pipeline.replay import (
    InvalidRequest,
    OutOfScope,
    RedriveRequest,
    ReplayRequest,
    replay_msg_id,
)
from eventray.pipeline.replay_marks import HEADER_TRACKER, ReplayMark, mark_headers
from tests.unit.pipelinekit import ORG
from tests.unit.replaykit import (
    BASE_MS,
    BROKEN,
    EVERYONE,
    ORG_B,
    PASS,
    SCOPE_A,
    STATE_A,
    STATE_B,
    SUBJECT,
    VERSION_2,
    World,
    build,
    event,
    world,
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def six_and_two() -> World:
    """org-a: events 1..6 (3 is an alert: one delivery); org-b: events 1..2; all stored."""
    w = await world()
    await w.send(*(event(n, alert=n == 3) for n in range(1, 7)))
    await w.send(event(1, org=ORG_B), event(2, org=ORG_B))
    await w.drain()
    assert (w.state()[STATE_A], w.state()[STATE_B]) == (6, 2)
    assert len(w.rig.stream.outbox().queued) == 1
    return w


def payload(row: dict[str, Any]) -> Any:
    return orjson.loads(row["payload"])


def test_keep_replaces_the_stored_rows_and_leaves_rule_state_and_triggers_alone() -> None:
    async def scenario() -> None:
        w = await six_and_two()
        rule_rows = len(w.rows("logs_rule"))
        w.apply(build(VERSION_2, revision=3))
        request = ReplayRequest(ORG, since_ms=BASE_MS)
        report = await w.service.replay(EVERYONE, request)
        assert report.events == 6 and report.stream_starts_ms is None
        (share,) = report.partitions
        assert (share.orgs, share.first_seq, share.last_seq, share.reset_seq) == ((ORG,), 1, 6, 0)
        copies = w.rig.stream.log(0)[-6:]
        assert [c.event_tracker_id for c in copies] == [f"e{n:04d}" for n in range(1, 7)]
        assert {c.revision for c in copies} == {3}
        assert w.rig.stream.headers[(0, copies[0].seq or 0)]["Nats-Msg-Id"] == replay_msg_id(
            report.replay_id, "e0001"
        )
        assert not await w.service.wait(report.copies, timeout_s=0.05)
        await w.drain()
        assert await w.service.wait(report.copies, timeout_s=1)
        stored = w.events_final()  # one row per event: the replay's
        assert sorted(stored) == ["b0001", "b0002", *(f"e{n:04d}" for n in range(1, 7))]
        assert all(payload(stored[f"e{n:04d}"])["version"] == 2 for n in range(1, 7))
        assert "version" not in payload(stored["b0001"])
        assert stored["e0001"]["stream_seq"] == share.copies_first
        assert (w.state()[STATE_A], w.state()[STATE_B]) == (6, 2)  # no rule evaluated
        assert len(w.rows("logs_rule")) == rule_rows
        assert len(w.rig.stream.outbox().queued) == 1  # nothing sent again

    run(scenario())


def test_fresh_resets_the_rule_state_and_rebuilds_it_from_the_range_each_event_once() -> None:
    async def scenario() -> None:
        w = await six_and_two()
        later = ReplayRequest(ORG, since_ms=BASE_MS + 3000, state="fresh")
        report = await w.service.replay(EVERYONE, later)
        (share,) = report.partitions
        assert share.events == 4 and share.reset_seq == 9  # after the 8 events
        assert share.copies_first == 10  # the copies come after the marker
        await w.drain()
        # Events 3..6 count; 1 and 2 are before the range; org-b is untouched.
        assert (w.state()[STATE_A], w.state()[STATE_B]) == (4, 2)
        evaluated = [r["event_tracker_id"] for r in w.rows("logs_rule")[-4:]]
        assert evaluated == ["e0003", "e0004", "e0005", "e0006"]  # rule logs written again

        # The whole range again: six events, not the first replay's copies too.
        again = await w.service.replay(EVERYONE, ReplayRequest(ORG, since_ms=0, state="fresh"))
        assert again.events == 6
        await w.drain()
        assert w.state()[STATE_A] == 6
        assert len(w.rig.stream.outbox().queued) == 1  # triggers not asked for

    run(scenario())


def test_triggers_are_sent_again_only_when_asked_as_new_deliveries() -> None:
    async def scenario() -> None:
        w = await six_and_two()
        queued = w.rig.stream.outbox().queued
        (first,) = queued
        for state in ("keep", "fresh"):
            request = ReplayRequest(ORG, since_ms=BASE_MS, state=state, triggers=True)  # type: ignore[arg-type]
            report = await w.service.replay(EVERYONE, request)
            await w.drain()
            assert f"replay:{report.replay_id}:{first}" in queued
        assert len(queued) == 3
        assert w.state()[STATE_A] == 6

    run(scenario())


def test_the_fence_takes_copies_and_markers_for_the_messages_they_are() -> None:
    async def scenario() -> None:
        w = await six_and_two()
        report = await w.service.replay(EVERYONE, ReplayRequest(ORG, since_ms=0, state="fresh"))
        await w.drain()
        assert w.state()[STATE_A] == 6
        # A lane dies before acknowledging the marker and the copies: its successor gets
        # them all again. The fence refuses the marker (no second reset) and the copies.
        stream = w.rig.stream
        stream._partition(0).acked = report.partitions[0].reset_seq - 1
        w.rig.lane.sources[0] = await stream.source(0)
        await w.drain()
        assert w.state()[STATE_A] == 6
        # New events after it count on the rebuilt state, once each.
        await w.send(event(7), event(8))
        await w.drain()
        assert w.state()[STATE_A] == 8

    run(scenario())


def test_a_reset_marker_applies_in_stream_order_within_a_fetched_batch() -> None:
    async def scenario() -> None:
        w = await world()
        reset = ReplayMark("r1", "fresh", reset_orgs=(ORG,))
        marker = OutboxMessage(SUBJECT, b"", "replay:r1:reset:p0", mark_headers(reset))
        await w.send(event(1), event(2), marker, event(3))  # one batch of four
        await w.drain()
        assert w.state()[STATE_A] == 1  # 1 and 2 counted, reset, then 3
        assert w.rows("dlq") == []  # the marker is not an event

    run(scenario())


def test_split_at_controls_gives_each_marker_a_batch_of_its_own() -> None:
    def item(tracker: str, mark: ReplayMark | None = None) -> Ingested:
        return Ingested(tracker, "ds", b"{}", 0, replay=mark)

    plain = [item("a"), item("b")]
    assert split_at_controls(plain) == [plain]
    copy = item("c", ReplayMark("r", "keep"))
    reset = item("m", ReplayMark("r", "fresh", reset_orgs=("o",)))
    parts = split_at_controls([item("a"), copy, reset, reset, item("d")])
    assert [[i.event_tracker_id for i in part] for part in parts] == [
        ["a", "c"], ["m"], ["m"], ["d"]
    ]  # fmt: skip


def test_a_replay_reads_only_the_callers_organizations_and_a_dry_run_changes_nothing() -> None:
    async def scenario() -> None:
        w = await six_and_two()
        with pytest.raises(OutOfScope):
            await w.service.replay(SCOPE_A, ReplayRequest(ORG_B, since_ms=0))
        with pytest.raises(OutOfScope):
            await w.service.replay(SCOPE_A, ReplayRequest("org-zzz", since_ms=0))
        in_stream = len(w.rig.stream.log(0))
        w.archive.dropped = True  # as if the stream's retention had dropped older events
        dry = await w.service.replay(
            SCOPE_A, ReplayRequest(ORG, since_ms=BASE_MS - 10_000, state="fresh"), dry_run=True
        )
        assert (dry.events, dry.partitions[0].reset_seq) == (6, 0)
        assert dry.partitions[0].sample == [f"e{n:04d}" for n in range(1, 7)]
        assert dry.stream_starts_ms == BASE_MS + 1000  # the range starts before the stream
        assert len(w.rig.stream.log(0)) == in_stream
        report = await w.service.replay(SCOPE_A, ReplayRequest(ORG, since_ms=0, state="fresh"))
        copies = w.rig.stream.log(0)[in_stream:]
        assert {c.event_tracker_id[0] for c in copies if not (c.replay and c.replay.control)} == {
            "e"
        }
        await w.drain()
        assert report.events == 6
        assert (w.state()[STATE_A], w.state()[STATE_B]) == (6, 2)  # org-b never reset
        with pytest.raises(InvalidRequest):
            await w.service.replay(EVERYONE, ReplayRequest(ORG))  # no start
        with pytest.raises(InvalidRequest):
            await w.service.replay(EVERYONE, ReplayRequest(ORG, since_ms=9, until_ms=9))

    run(scenario())


def test_a_range_by_sequence_or_until_and_with_children_selects_what_it_says() -> None:
    async def scenario() -> None:
        child = {"kind": "Organization", "id": "org-a1", "name": "A1", "type": "site",
                 "parentId": ORG}  # fmt: skip
        w = await six_and_two()
        w.apply(build(PASS, [child]))
        until = await w.service.replay(
            EVERYONE, ReplayRequest(ORG, since_ms=BASE_MS, until_ms=BASE_MS + 3000), dry_run=True
        )
        assert until.partitions[0].sample == ["e0001", "e0002"]
        by_seq = await w.service.replay(
            EVERYONE, ReplayRequest(ORG, start_seq=2, end_seq=4), dry_run=True
        )
        assert by_seq.partitions[0].sample == ["e0002", "e0003"]
        family = await w.service.replay(
            EVERYONE, ReplayRequest(ORG, since_ms=0, include_children=True), dry_run=True
        )
        assert family.partitions[0].orgs == (ORG, "org-a1")

    run(scenario())


def test_a_keep_copy_that_failed_is_redriven_as_that_replays_copy() -> None:
    async def scenario() -> None:
        w = await world()
        await w.send(*(event(n, bad=n == 2) for n in range(1, 4)))
        await w.drain()
        assert w.state()[STATE_A] == 3
        w.apply(build(BROKEN))  # a change that breaks event 2
        await w.service.replay(EVERYONE, ReplayRequest(ORG, since_ms=0))
        await w.drain()
        (failed,) = w.rows("dlq")
        assert failed["event_tracker_id"] == "e0002"
        w.apply(build(PASS))
        report = await w.service.redrive(EVERYONE, RedriveRequest(everything=True))
        (item,) = report.items
        copy = w.rig.stream.log(0)[-1]
        assert copy.replay is not None and copy.replay.state == "keep"
        assert w.rig.stream.headers[(0, item.stream_seq)][HEADER_TRACKER] == "e0002"
        await w.drain()
        assert w.state()[STATE_A] == 3  # it had counted already: it does not count twice
        assert payload(w.events_final()["e0002"])["bad"] is True

    run(scenario())


def test_a_fresh_replay_handles_the_dlq_entries_of_the_events_it_counted() -> None:
    async def scenario() -> None:
        w = await world(BROKEN)
        await w.send(*(event(n, bad=n == 2) for n in range(1, 4)))
        await w.drain()
        assert w.state()[STATE_A] == 2  # event 2 failed: in the DLQ, never counted
        w.apply(build(PASS))
        keep = await w.service.replay(EVERYONE, ReplayRequest(ORG, since_ms=0))
        await w.drain()
        assert keep.partitions[0].superseded == 0
        assert w.state()[STATE_A] == 2  # keep: stored now, still not counted...
        pending = await w.service.dead_letters(EVERYONE, RedriveRequest(everything=True),
                                               redriven=False)  # fmt: skip
        assert [e.event_tracker_id for e in pending] == ["e0002"]  # ...so its entry stays

        fresh = await w.service.replay(EVERYONE, ReplayRequest(ORG, since_ms=0, state="fresh"))
        assert fresh.partitions[0].superseded == 1
        await w.drain()
        assert w.state()[STATE_A] == 3  # each event once, event 2 included
        (entry,) = await w.service.dead_letters(
            EVERYONE, RedriveRequest(everything=True), redriven=True
        )
        assert entry.redrive is not None
        assert (entry.redrive.redrive_id, entry.redrive.requested_by) == (
            fresh.replay_id, f"replay:{fresh.replay_id}",
        )  # fmt: skip
        assert (await w.service.redrive(EVERYONE, RedriveRequest(everything=True))).items == []
        await w.drain()
        assert w.state()[STATE_A] == 3

    run(scenario())
