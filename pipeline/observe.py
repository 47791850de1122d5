"""What a lane tells its metrics about each batch: the port, and its in-memory twin.

The counters a lane keeps for ``eventray status`` are read on demand; a metrics system that
exports on its own schedule (Ray's, through ``ray.util.metrics``) must instead be told as
things happen. It is told once per batch, never per event: a batch of 1,000 events costs a
handful of calls, so the event path pays nothing measurable for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["BatchObserver", "RecordingObserver"]


class BatchObserver(Protocol):
    """Receives a lane's batch-level facts (implemented over ``ray.util.metrics`` by the lane
    actor; :class:`RecordingObserver` in tests)."""

    def stage_done(self, stage: str, events: int, seconds: float) -> None:
        """A batch of ``events`` events went through ``stage`` in ``seconds``."""

    def batch_done(
        self,
        partition: int,
        stored: int,
        failed_by_stage: Mapping[str, int],
        latencies_ms: Sequence[float],
    ) -> None:
        """A batch of ``partition`` was acknowledged: ``stored`` events stored, the others
        sent to the DLQ (counted by the stage that failed them); ``latencies_ms`` are the
        ingress-to-stored latencies of its events."""


@dataclass(slots=True)
class RecordingObserver(BatchObserver):
    """Keeps what it is told, for tests."""

    stage_events: Counter[str] = field(default_factory=Counter)
    stage_batches: Counter[str] = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stored: Counter[int] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    batches: int = 0

    def stage_done(self, stage: str, events: int, seconds: float) -> None:
        self.stage_events[stage] += events
        self.stage_batches[stage] += 1
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def batch_done(
        self,
        partition: int,
        stored: int,
        failed_by_stage: Mapping[str, int],
        latencies_ms: Sequence[float],
    ) -> None:
        self.batches += 1
        self.stored[partition] += stored
        self.failed.update(failed_by_stage)
        self.latencies_ms.extend(latencies_ms)
