"""A lane's stage metrics recorded through ``ray.util.metrics``, for Ray's own export.

Ray's dashboard agent on every node serves the metrics its workers record on the node's
``MetricsExportPort`` (Prometheus text, names prefixed ``ray_``): what a KubeRay
``PodMonitor`` scrapes and Ray's Grafana dashboards read. The driver's ``/metrics``
(``cluster/metrics.py``) stays for a plain Prometheus next to a single stack; these
cover a cluster, where the driver may be a finished job.

Recorded where the counts live, at batch level: :class:`LaneMetrics` is the lane's
:class:`~eventray.pipeline.observe.BatchObserver` (a few calls per batch, whatever its size),
and every ``metrics.ray_interval_s`` the lane actor sets its lag and lane gauges and moves the
trigger counters on (:meth:`LaneMetrics.publish`). Ray aggregates and exports on its own
schedule (every ~10 s), so nothing here waits on the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ray.util.metrics import Counter, Gauge, Histogram

from eventray.pipeline.observe import BatchObserver

__all__ = ["RAY_METRIC_NAMES", "LaneMetrics"]

_STAGE_BOUNDARIES_S = [
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
]
_LATENCY_BOUNDARIES_MS = [5.0, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
_LATENCY_SAMPLE = 8
"""One event in this many is observed by the latency histogram: the sample is over events, not
batches, so the quantiles are unbiased, and a 1,000-event batch costs 125 observations."""

RAY_METRIC_NAMES = (
    "eventray_stage_events",
    "eventray_stage_batch_seconds",
    "eventray_events_stored",
    "eventray_events_dlq",
    "eventray_event_latency_ms",
    "eventray_partition_lag",
    "eventray_lane_up",
    "eventray_trigger_deliveries",
    "eventray_trigger_attempts",
)
"""The names as recorded; Ray exports them prefixed ``ray_`` (and counters suffixed
``_total``, histograms ``_bucket``/``_sum``/``_count``)."""


class LaneMetrics(BatchObserver):
    """The Ray metrics of one lane actor (one per process: Ray keeps one series per name and
    tag set per worker, so two instances in a process would double nothing, but one is all a
    lane needs).

    Args:
        lane: the lane actor's name, the ``lane`` tag of its gauges.
    """

    def __init__(self, lane: str) -> None:
        self.lane = lane
        self._stage_events = Counter(
            "eventray_stage_events",
            description="events that went through a pipeline stage (throughput per stage)",
            tag_keys=("stage",),
        )
        self._stage_seconds = Histogram(
            "eventray_stage_batch_seconds",
            description="time one batch spent in a pipeline stage",
            boundaries=_STAGE_BOUNDARIES_S,
            tag_keys=("stage",),
        )
        self._stored = Counter(
            "eventray_events_stored",
            description="events a lane carried to the store, per partition",
            tag_keys=("partition",),
        )
        self._dlq = Counter(
            "eventray_events_dlq",
            description="events sent to the DLQ, by the stage that failed them",
            tag_keys=("stage",),
        )
        self._latency = Histogram(
            "eventray_event_latency_ms",
            description=(
                f"ingress -> stored latency of events (one in {_LATENCY_SAMPLE} is observed)"
            ),
            boundaries=_LATENCY_BOUNDARIES_MS,
        )
        self._lag = Gauge(
            "eventray_partition_lag",
            description="events waiting in the stream for a partition's lane",
            tag_keys=("partition",),
        )
        self._up = Gauge(
            "eventray_lane_up",
            description="1 per running lane actor (sum() is the lane count)",
            tag_keys=("lane",),
        )
        self._deliveries = Counter(
            "eventray_trigger_deliveries",
            description="trigger deliveries by outcome (delivered, failed after retries)",
            tag_keys=("outcome",),
        )
        self._attempts = Counter(
            "eventray_trigger_attempts", description="trigger delivery attempts, retries included"
        )
        self._seen = 0
        self._triggers_seen: dict[str, int] = {}
        self._primed = False

    # ------------------------------------------------------------------ per batch
    def stage_done(self, stage: str, events: int, seconds: float) -> None:
        tags = {"stage": stage}
        if events:
            self._stage_events.inc(events, tags)
        self._stage_seconds.observe(seconds, tags)

    def batch_done(
        self,
        partition: int,
        stored: int,
        failed_by_stage: Mapping[str, int],
        latencies_ms: Sequence[float],
    ) -> None:
        if stored:
            self._stored.inc(stored, {"partition": str(partition)})
        for stage, count in failed_by_stage.items():
            self._dlq.inc(count, {"stage": stage})
        # Continue the stride across batches, so every batch size is sampled alike.
        start = -self._seen % _LATENCY_SAMPLE
        for latency in latencies_ms[start::_LATENCY_SAMPLE]:
            self._latency.observe(latency)
        self._seen += len(latencies_ms)

    # ------------------------------------------------------------------ periodic
    def publish(self, lag: Mapping[int, int], triggers: Mapping[str, Any]) -> None:
        """Set the gauges and move the trigger counters on by what the dispatcher counted since
        the last call (its counters are cumulative; Ray's counters take increments)."""
        self._up.set(1, {"lane": self.lane})
        for partition, pending in lag.items():
            self._lag.set(pending, {"partition": str(partition)})
        for key in ("delivered", "failed", "attempts"):
            now = int(triggers.get(key, 0) or 0)
            delta = now - self._triggers_seen.get(key, 0)
            self._triggers_seen[key] = now
            if delta <= 0:  # nothing new, or the dispatcher was rebuilt (counts from 0 again)
                continue
            if key == "attempts":
                self._attempts.inc(delta)
            else:
                self._deliveries.inc(delta, {"outcome": key})
        if not self._primed:
            self._primed = True
            _zero(self._deliveries, {"outcome": "delivered"})
            _zero(self._deliveries, {"outcome": "failed"})
            _zero(self._attempts, None)
            _zero(self._dlq, {"stage": "none"})


def _zero(counter: Counter, tags: dict[str, str] | None) -> None:
    """Create a counter's series at 0, so a dashboard shows 0 failures rather than no data
    (Prometheus cannot tell a counter that never moved from one that does not exist).
    ``Counter.inc`` refuses 0; ``_record`` is what it and ``Gauge.set`` call."""
    counter._record(0.0, tags=tags)
