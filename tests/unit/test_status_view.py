"""The frames of ``eventray status`` and the scrape's families, from status snapshots (no Ray:
the snapshots are what :func:`eventray.cluster.status_gather.gather_status` returns)."""

from __future__ import annotations

import io
from typing import Any

from prometheus_client.registry import CollectorRegistry
from rich.console import Console

from eventray.cluster.metrics import StackCollector
from eventray.cluster.status_view import Frame, print_once, render, watch


def lane(name: str, partitions: list[int], events: int, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "partitions": partitions,
        "events": events,
        "failed": 2,
        "retries": 0,
        "lag": {p: 10 * p for p in partitions},
        "events_by_partition": {p: events // len(partitions) for p in partitions},
        "stage_s": {"head": 1.5, "store": 0.25},
        "latency_p50_ms": 12.0,
        "latency_p99_ms": 80.5,
        "last_error": "",
        "triggers": {"delivered": 3, "failed": 1, "attempts": 5},
        **more,
    }


def snapshot(events: int, *, stuck: bool = False) -> dict[str, Any]:
    lanes = [lane("lane-0", [0, 1], events)]
    unanswered = {"lane-1": "no answer within 2 s (stuck or restarting)"} if stuck else {}
    if not stuck:
        lanes.append(lane("lane-1", [2, 3], events, last_error="p2: store: timeout"))
    return {
        "lanes": lanes,
        "triggers": {"delivered": 3, "failed": 1, "attempts": 5, "last_error": ""},
        "ingress": {"answers": {"201": 7}},
        "store": {"rows_written": 5},
        "answered": ["ingress", "lane-0", "store"] + ([] if stuck else ["lane-1"]),
        "unanswered": unanswered,
    }


def text(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(renderable)
    return out.getvalue()


def test_a_frame_shows_lanes_partitions_rates_stages_and_errors() -> None:
    shown = text(render(Frame(snapshot(3000), 11.0), Frame(snapshot(1000), 10.0)))
    assert "lanes 2" in shown and "events 6,000" in shown and "(4,000/s)" in shown
    assert "2,000/s" in shown  # per lane
    assert "lag 60" in shown  # 0 + 10 + 20 + 30 over partitions 0-3
    assert "│         3 │ lane-1 │  30 │  1,500 │" in shown  # a row per partition
    assert "head" in shown and "3.00" in shown  # stage seconds summed over lanes
    assert "lane-1: last error: p2: store: timeout" in shown
    assert "failed 1" in shown and "80.5" in shown


def test_a_stuck_lane_is_shown_as_stuck() -> None:
    shown = text(render(Frame(snapshot(10, stuck=True), 1.0), None))
    assert "STUCK" in shown and "lane-1" in shown and "no answer within 2 s" in shown
    assert "lanes 1" in shown  # the ones that answered


def test_one_frame_for_scripts_has_no_terminal_codes() -> None:
    out = io.StringIO()
    snapshots = iter([snapshot(0), snapshot(100)])
    print_once(lambda: next(snapshots), out)
    assert "lane-0" in out.getvalue() and "\x1b[" not in out.getvalue()


def test_the_scrape_marks_actors_that_did_not_answer() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StackCollector(lambda: snapshot(10, stuck=True)))
    assert registry.get_sample_value("eventray_actor_unanswered", {"actor": "lane-1"}) == 1.0
    assert registry.get_sample_value("eventray_actor_unanswered", {"actor": "lane-0"}) == 0.0
    assert registry.get_sample_value("eventray_lane_events_total", {"lane": "0,1"}) == 10.0
    assert registry.get_sample_value("eventray_lane_events_total", {"lane": "2,3"}) is None


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_view_refreshes_until_ctrl_c_and_ends_quietly() -> None:
    out = Terminal()
    taken: list[int] = []

    def take() -> dict[str, Any]:
        taken.append(1)
        if len(taken) == 4:
            raise KeyboardInterrupt  # Ctrl-C while a frame is being taken
        return snapshot(len(taken) * 1000)

    watch(take, out, interval_s=0.01)
    assert len(taken) == 4  # three frames shown, the fourth interrupted
    shown = out.getvalue()
    assert "events 6,000" in shown and "/s)" in shown  # the third frame, with a rate


def test_the_status_line_of_up_and_demo_names_actors_that_did_not_answer() -> None:
    from eventray.cluster.stack_cli import _status_line

    stuck = _status_line(snapshot(10, stuck=True), 0.0).splitlines()
    assert stuck[1] == "  NOT ANSWERING (stuck or restarting): lane-1"
    assert len(_status_line(snapshot(10), 0.0).splitlines()) == 1
