"""``eventray status`` as people watch it: a live view of lanes, partitions, stages and errors.

Each frame is one :func:`~eventray.cluster.status_gather.gather_status` snapshot (so a stuck
actor shows as stuck, it does not freeze the view); rates are the differences between two
frames. On a terminal the view refreshes every second until Ctrl-C; ``--once`` or output that
is not a terminal prints one frame, as plain text; ``--json`` prints the snapshot itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["Frame", "print_once", "render", "watch"]

Snapshot = Callable[[], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Frame:
    """A snapshot and when it was taken (``time.monotonic``)."""

    status: dict[str, Any]
    at: float


def _rate(now: Frame, before: Frame | None, count: Callable[[dict[str, Any]], float]) -> str:
    if before is None or now.at <= before.at:
        return "-"
    per_s = (count(now.status) - count(before.status)) / (now.at - before.at)
    return f"{max(per_s, 0.0):,.0f}/s"


def _lane_by_name(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((lane for lane in status["lanes"] if lane.get("name") == name), {})


def render(now: Frame, before: Frame | None) -> RenderableType:
    """One frame: the totals, a row per lane, a row per partition, the stages, and what is
    wrong (actors that did not answer, last errors)."""
    s = now.status
    lanes = s["lanes"]
    events = sum(lane.get("events", 0) for lane in lanes)
    failed = sum(lane.get("failed", 0) for lane in lanes)
    lag = sum(sum(lane.get("lag", {}).values()) for lane in lanes)
    triggers = s.get("triggers", {})
    head = Text.assemble(
        ("eventray ", "bold"),
        f"lanes {len(lanes)}  events {events:,} ",
        (f"({_rate(now, before, lambda x: _sum(x, 'events'))})", "cyan"),
        f"  dlq {failed:,}  lag {lag:,}  triggers ok {triggers.get('delivered', 0):,} ",
        (f"failed {triggers.get('failed', 0):,}", "red" if triggers.get("failed") else ""),
    )
    table = Table(title="lanes", title_justify="left", expand=False)
    for column in ("lane", "partitions", "events", "rate", "dlq", "retries", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("lane", "partitions") else "right")
    for lane in lanes:
        name = lane.get("name", "?")
        table.add_row(
            name,
            ",".join(str(p) for p in lane.get("partitions", [])),
            f"{lane.get('events', 0):,}",
            _rate(now, before, _lane_events(name)),
            f"{lane.get('failed', 0):,}",
            f"{lane.get('retries', 0):,}",
            f"{lane.get('latency_p50_ms', 0.0):.1f}",
            f"{lane.get('latency_p99_ms', 0.0):.1f}",
        )
    for name, why in s.get("unanswered", {}).items():
        if name.startswith("lane-"):
            table.add_row(Text(name, "bold red"), Text(f"STUCK: {why}", "red"))
    partitions = Table(title="partitions", title_justify="left")
    for column in ("partition", "lane", "lag", "events"):
        partitions.add_column(column, justify="right")
    rows = []
    for lane in lanes:
        handled = lane.get("events_by_partition", {})
        for partition, pending in lane.get("lag", {}).items():
            rows.append((int(partition), lane.get("name", "?"), pending, handled.get(partition, 0)))
    for partition, name, pending, handled in sorted(rows):
        style = "yellow" if pending else ""
        partitions.add_row(str(partition), name, Text(f"{pending:,}", style), f"{handled:,}")
    stages = Table(title="stage time, s (all lanes)", title_justify="left")
    totals: dict[str, float] = {}
    for lane in lanes:
        for stage, seconds in lane.get("stage_s", {}).items():
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
    for stage in totals:
        stages.add_column(stage, justify="right")
    if totals:
        stages.add_row(*(f"{seconds:.2f}" for seconds in totals.values()))
    problems = Text()
    for name, why in s.get("unanswered", {}).items():
        problems.append(f"{name}: STUCK, {why}\n", "bold red")
    for lane in lanes:
        if lane.get("last_error"):
            problems.append(f"{lane.get('name')}: last error: {lane['last_error'][:200]}\n", "red")
    if triggers.get("last_error"):
        problems.append(f"triggers: last error: {triggers['last_error'][:200]}\n", "red")
    ingress = s.get("ingress", {})
    if ingress.get("stream_drops"):
        problems.append(f"EVENTS LOST: the stream dropped events ({ingress.get('last_drop')})\n")
    parts: list[RenderableType] = [head, table, partitions, stages]
    if problems:
        parts.append(problems)
    return Group(*parts)


def _lane_events(name: str) -> Callable[[dict[str, Any]], float]:
    def count(status: dict[str, Any]) -> float:
        return float(_lane_by_name(status, name).get("events", 0))

    return count


def _sum(status: dict[str, Any], key: str) -> float:
    return float(sum(lane.get(key, 0) for lane in status["lanes"]))


def print_once(snapshot: Snapshot, out: TextIO) -> None:
    """One frame as plain text (rates need two snapshots: they are taken a second apart)."""
    before = Frame(snapshot(), time.monotonic())
    time.sleep(1.0)
    now = Frame(snapshot(), time.monotonic())
    Console(file=out, force_terminal=False, width=120, color_system=None).print(render(now, before))


def watch(snapshot: Snapshot, out: TextIO, *, interval_s: float = 1.0) -> None:
    """Refresh every ``interval_s`` until Ctrl-C (which ends it quietly)."""
    console = Console(file=out)
    before: Frame | None = None
    now = Frame(snapshot(), time.monotonic())
    try:
        with Live(render(now, before), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval_s)
                before, now = now, Frame(snapshot(), time.monotonic())
                live.update(render(now, before), refresh=True)
    except KeyboardInterrupt:
        return
