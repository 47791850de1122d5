"""Prometheus metrics of a running stack, served on loopback by the process that runs it.

The actors already count everything (events, failures, stage seconds, lag, answers, rows);
a collector reads those counts through :meth:`cluster.stack.Stack.status` on each scrape. A
scrape every 15 s costs a handful of actor calls; the event path pays nothing. Each actor gets
``metrics.actor_timeout_s`` to answer, so a stuck one cannot hang the scrape. The same stage
counts also go to Ray's own metrics export from the lanes (:mod:`eventray.actors.ray_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["StackCollector", "serve_metrics"]

Status = Callable[[], dict[str, Any]]


class StackCollector(Collector):
    """Turns one :meth:`Stack.status` snapshot into metric families."""

    def __init__(self, status: Status) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status()
        lanes = s.get("lanes", [])
        counters = {
            "events": "events a lane carried to the store",
            "failed": "events that went to the DLQ",
            "batches": "batches completed",
            "retries": "batch steps retried after an error",
        }
        for key, help_text in counters.items():
            family = CounterMetricFamily(f"eventray_lane_{key}", help_text, labels=["lane"])
            for lane in lanes:
                family.add_metric([_lane(lane)], float(lane.get(key, 0)))
            yield family
        stages = CounterMetricFamily(
            "eventray_stage_seconds", "time spent per pipeline stage", labels=["lane", "stage"]
        )
        lag = GaugeMetricFamily(
            "eventray_consumer_lag", "events waiting in the stream", labels=["partition"]
        )
        latency = GaugeMetricFamily(
            "eventray_latency_ms",
            "ingress -> stored latency over the lane's recent events",
            labels=["lane", "quantile"],
        )
        for lane in lanes:
            for stage, seconds in lane.get("stage_s", {}).items():
                stages.add_metric([_lane(lane), stage], float(seconds))
            for partition, pending in lane.get("lag", {}).items():
                lag.add_metric([str(partition)], float(pending))
            latency.add_metric([_lane(lane), "0.5"], float(lane.get("latency_p50_ms", 0.0)))
            latency.add_metric([_lane(lane), "0.99"], float(lane.get("latency_p99_ms", 0.0)))
        yield stages
        yield lag
        yield latency
        answers = CounterMetricFamily(
            "eventray_ingress_answers", "HTTP answers of the ingress", labels=["status"]
        )
        for status, count in s.get("ingress", {}).get("answers", {}).items():
            answers.add_metric([str(status)], float(count))
        yield answers
        uplinks = CounterMetricFamily(
            "eventray_mqtt_uplinks",
            "MQTT uplinks the ingress's bridge took, by outcome (accepted into the stream, "
            "refused and kept in events_raw, retried after the stream failed, shed by admission)",
            labels=["outcome"],
        )
        for outcome, count in s.get("ingress", {}).get("mqtt", {}).items():
            if isinstance(count, int):
                uplinks.add_metric([outcome], float(count))
        yield uplinks
        drops = CounterMetricFamily(
            "eventray_stream_drops",
            "times the stream was found to have dropped a partition's events before a lane "
            "took them (its size or age limit): lost events",
            labels=["partition"],
        )
        for partition, count in s.get("ingress", {}).get("stream_drops", {}).items():
            drops.add_metric([str(partition)], float(count))
        yield drops
        store = s.get("store", {})
        yield CounterMetricFamily(
            "eventray_store_rows",
            "rows written to the event store",
            value=store.get("rows_written", 0),
        )
        yield CounterMetricFamily(
            "eventray_store_statements", "insert statements run", value=store.get("statements", 0)
        )
        yield from _scaling(s.get("scaling", {}))
        triggers = s.get("triggers", {})
        for key in ("delivered", "failed", "attempts"):
            yield CounterMetricFamily(
                f"eventray_trigger_{key}", f"trigger deliveries {key}", value=triggers.get(key, 0)
            )
        unanswered = GaugeMetricFamily(
            "eventray_actor_unanswered",
            "1 for an actor that did not answer this scrape in time (stuck or restarting); "
            "its own series are left out of the scrape rather than reported as 0",
            labels=["actor"],
        )
        for actor in s.get("answered", []):
            unanswered.add_metric([actor], 0.0)
        for actor in s.get("unanswered", {}):
            unanswered.add_metric([actor], 1.0)
        yield unanswered


def _scaling(scaling: dict[str, Any]) -> Iterator[Metric]:
    """The lane count and the lag-driven scaling's decisions (see ``pipeline/scaling.py``)."""
    if not scaling:
        return
    yield GaugeMetricFamily(
        "eventray_lanes", "lane actors running", value=float(scaling.get("lanes", 0))
    )
    decisions = CounterMetricFamily(
        "eventray_scaling_decisions",
        "lane scaling decisions that changed (or tried to change) the lane count",
        labels=["direction"],
    )
    for direction in ("up", "down"):
        decisions.add_metric([direction], float(scaling.get("decisions", {}).get(direction, 0)))
    yield decisions


def _lane(lane: dict[str, Any]) -> str:
    return ",".join(str(p) for p in lane.get("partitions", []))


def serve_metrics(status: Status, *, host: str, port: int) -> tuple[Any, int]:
    """Serve ``/metrics`` for ``status`` on ``host:port`` (0 = a free port) in a daemon thread.

    Returns the server (call ``shutdown()`` to stop it) and the port it listens on.
    """
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StackCollector(status))
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
