"""One event's whole story by its eventTrackerId: every stored row about it, in order.

The raw body (when kept: debug assets and refused ingestions), the script run, the route
groups' decisions, the stored event, the rule evaluations and their capture records, the
trigger attempts and the DLQ entries, each as the decoded row its own query returns
(:func:`~eventray.pipeline.storage.query.query_events`,
:func:`~eventray.pipeline.storage.logs.query_logs`), in one list of steps.

Order: by time, and at equal times by processing order (raw, script, router, event, rule,
capture, trigger, dlq). Log rows of one pass through the pipeline are all stamped with the
time the event entered the platform, while the stored event keeps the Standard Event's own
``created`` (a device's clock, often earlier); so the event step is placed at its pass's time
(the earliest raw/script/router/rule/capture row, when there is one) and reports its own
``created`` as ``at``. Trigger attempts carry the time they were made and a DLQ entry of a
trigger the time it was given up, so both come after the pass that caused them.

What the scope may not read is not part of the story: a tracker id of another tenant reads as
unknown (None), like one that was never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventray.pipeline.ports import EventStore
from eventray.pipeline.storage.logs import SORT_KEYS, LogQuery, query_logs
from eventray.pipeline.storage.query import EventQuery, query_events
from eventray.pipeline.storage.schema import DEFAULT_DATABASE
from eventray.pipeline.storage.scope import Scope

__all__ = ["STEP_KINDS", "EventStory", "StoryStep", "event_story"]

STEP_KINDS: dict[str, str] = {
    "raw": "events_raw",
    "script": "logs_script",
    "router": "logs_router",
    "event": "events",
    "rule": "logs_rule",
    "capture": "logs_capture",
    "trigger": "logs_trigger",
    "dlq": "dlq",
}
"""Step kinds in processing order, and the table each comes from."""

_RANK = {kind: rank for rank, kind in enumerate(STEP_KINDS)}
_PASS = ("raw", "script", "router", "rule", "capture")
_MAX_ROWS = 10_000  # per table: far beyond one event's rows (trigger attempts are bounded)


@dataclass(frozen=True, slots=True)
class StoryStep:
    """One stored row about the event: ``kind`` (see :data:`STEP_KINDS`), ``at`` (the row's
    ``created``, UTC text) and the decoded row."""

    kind: str
    at: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventStory:
    """Everything stored about one event that the scope may read."""

    event_tracker_id: str
    steps: list[StoryStep] = field(default_factory=list)
    truncated: bool = False
    """A table held more than 10,000 rows for this event; the rest are left out."""

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The records of one kind, in story order."""
        return [step.record for step in self.steps if step.kind == kind]

    def summary(self) -> dict[str, Any]:
        """What happened, in a few fields: where the event belongs, whether it was stored,
        which business rules matched, trigger attempts and DLQ stages."""
        first = self.steps[0].record if self.steps else {}
        triggers = self.of("trigger")
        return {
            "orgId": first.get("org_id"),
            "pathKey": first.get("path_key"),
            "stored": bool(self.of("event")),
            "rulesMatched": sorted(
                {str(r["business_rule_id"]) for r in self.of("rule") if r.get("matched")}
            ),
            "triggerAttempts": len(triggers),
            "triggersDelivered": sorted({str(t["trigger_id"]) for t in triggers if t["success"]}),
            "dlqStages": [str(d["stage"]) for d in self.of("dlq")],
        }

    def to_dict(self) -> dict[str, Any]:
        """The story as JSON-ready values (what an API returns)."""
        return {
            "eventTrackerId": self.event_tracker_id,
            "summary": self.summary(),
            "truncated": self.truncated,
            "steps": [{"kind": s.kind, "at": s.at, "record": s.record} for s in self.steps],
        }


def _sort_key(kind: str, at: str, record: dict[str, Any]) -> tuple[Any, ...]:
    table = STEP_KINDS[kind]
    key = SORT_KEYS.get(table, ("event_tracker_id",))
    return (at, _RANK[kind], *(record.get(c) for c in key))  # one kind: same types


def event_story(
    store: EventStore, scope: Scope, event_tracker_id: str, *, database: str = DEFAULT_DATABASE
) -> EventStory | None:
    """Every row about ``event_tracker_id`` that ``scope`` may read, or None if there is none.

    Eight reads (one per table), each restricted to the scope and the tracker id.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    truncated = False
    events = query_events(
        store,
        EventQuery(scope=scope, event_tracker_id=event_tracker_id, limit=_MAX_ROWS),
        database=database,
    )
    found["event"] = events.rows
    truncated |= events.next_cursor is not None
    for kind, table in STEP_KINDS.items():
        if kind == "event":
            continue
        page = query_logs(
            store,
            LogQuery(table, scope, event_tracker_id=event_tracker_id, limit=_MAX_ROWS),
            database=database,
        )
        found[kind] = page.rows
        truncated |= page.next_cursor is not None
    if not any(found.values()):
        return None
    passes = [str(r["created"]) for kind in _PASS for r in found[kind]]
    ordered: list[tuple[tuple[Any, ...], StoryStep]] = []
    for kind, records in found.items():
        for record in records:
            at = str(record["created"])
            placed = min(passes) if kind == "event" and passes else at
            ordered.append((_sort_key(kind, placed, record), StoryStep(kind, at, record)))
    ordered.sort(key=lambda item: item[0])
    return EventStory(event_tracker_id, [step for _, step in ordered], truncated)
