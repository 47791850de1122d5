"""What a lane tells its metrics and its logs, over the in-memory twins: batch-level facts to
the observer, a log line with the event's ids for each event sent to the DLQ (a few per batch),
none on the happy path; and the JSON formatter those lines go through."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.config.logs import JsonFormatter, configure_logging
from eventray.pipeline.observe import RecordingObserver
from tests.unit.pipelinekit import FlakySink, Rig, ingested, rig


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """What the ``eventray`` loggers emit at INFO and up (attached to their tree's root, so it
    sees them whether or not they propagate further)."""
    handler = Captured()
    root = logging.getLogger("eventray")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def observed(count: int, sink: Any = None) -> tuple[Rig, RecordingObserver]:
    r = await rig(sink=sink)
    observer = RecordingObserver()
    r.pipeline.observer = observer
    r.lane.observer = observer
    r.items = r.stream.add(0, [ingested(n) for n in range(count)])
    await r.lane.run_until(count, timeout_s=20)
    return r, observer


def test_the_observer_hears_each_batch_and_each_stage_and_no_line_is_logged(
    logged: list[logging.LogRecord],
) -> None:
    r, seen = asyncio.run(observed(250))
    assert seen.batches == r.lane.stats.batches >= 3  # batch level: a call per batch
    assert seen.stored[0] == 250 and not seen.failed
    for stage in ("head", "rules", "rows", "store", "outbox", "commit"):
        assert seen.stage_events[stage] == 250, stage
        assert seen.stage_batches[stage] == seen.batches
    assert abs(seen.stage_seconds["head"] - r.pipeline.stage_s["head"]) < 1e-9
    assert len(seen.latencies_ms) == 250 and min(seen.latencies_ms) >= 0
    assert [rec.getMessage() for rec in logged] == []  # the happy path logs nothing


def test_events_sent_to_the_dlq_are_counted_by_stage_and_logged_with_their_ids(
    logged: list[logging.LogRecord],
) -> None:
    poison = [f"e{n:04d}" for n in range(0, 100, 10)]
    _, seen = asyncio.run(observed(100, FlakySink(poison=poison)))
    assert seen.failed == {"store": 10} and sum(seen.stored.values()) == 90
    dlq = [rec for rec in logged if rec.getMessage().startswith("event sent to the DLQ")]
    named = {rec.eventTrackerId for rec in dlq}  # type: ignore[attr-defined]
    assert named and named <= set(poison)
    for rec in dlq:
        assert rec.levelno == logging.WARNING
        assert rec.stage == "store" and rec.partition == 0  # type: ignore[attr-defined]
        assert rec.org == "org-a"  # type: ignore[attr-defined]
    more = [rec for rec in logged if "more events of this batch" in rec.getMessage()]
    assert len(dlq) + sum(int(rec.getMessage().split()[0]) for rec in more) == 10
    narrowed = [rec for rec in logged if "narrowing it down" in rec.getMessage()]
    assert narrowed and all(rec.stage == "store" for rec in narrowed)  # type: ignore[attr-defined]
    good = {f"e{n:04d}" for n in range(100)} - set(poison)
    assert not any(getattr(rec, "eventTrackerId", None) in good for rec in logged)


def test_a_batch_full_of_failures_logs_a_few_lines_and_a_count(
    logged: list[logging.LogRecord],
) -> None:
    _, seen = asyncio.run(observed(100, FlakySink(poison=[f"e{n:04d}" for n in range(100)])))
    assert sum(seen.failed.values()) == 100
    dlq = [rec for rec in logged if rec.getMessage().startswith("event sent to the DLQ")]
    assert len(dlq) <= 5 * seen.batches  # not a line per event


def test_the_json_formatter_puts_extra_fields_beside_the_message() -> None:
    formatter = JsonFormatter("lane-3")
    record = logging.LogRecord(
        "eventray.pipeline.lane", logging.WARNING, "f", 1, "x %s", ("y",), None
    )
    record.eventTrackerId, record.org, record.stage, record.partition = "t1", "o1", "store", 4
    line = json.loads(formatter.format(record))
    assert line["msg"] == "x y" and line["level"] == "WARNING" and line["component"] == "lane-3"
    assert (line["eventTrackerId"], line["org"], line["stage"], line["partition"]) == (
        "t1",
        "o1",
        "store",
        4,
    )
    assert line["ts"].endswith("Z") and "args" not in line
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(formatter.format(record))["exc"]


def test_configure_logging_is_idempotent_and_writes_the_chosen_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger("eventray")
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        for fmt in ("text", "json"):
            err = io.StringIO()
            monkeypatch.setattr("sys.stderr", err)
            configure_logging(component="driver", fmt=fmt, level="INFO")  # type: ignore[arg-type]
            configure_logging(component="driver", fmt=fmt, level="INFO")  # type: ignore[arg-type]
            assert [h.get_name() for h in root.handlers].count("eventray") == 1
            assert root.propagate  # the driver's records still reach the root's handlers
            logging.getLogger("eventray.cluster.x").info("hello", extra={"org": "o"})
            logging.getLogger("eventray.cluster.x").debug("not at INFO")
            out = err.getvalue().strip().splitlines()
            assert len(out) == 1
            if fmt == "json":
                assert json.loads(out[0])["org"] == "o"
            else:
                assert "INFO driver eventray.cluster.x: hello" in out[0]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        root.propagate = saved[2]
