"""Lag-driven lane scaling under a step in load, on the embedded stack on this machine.

1. **Capacity of one lane**: a backlog published straight to JetStream while the one lane is
   paused, then timed as it drains (events/s, the sample customer copied ``--tenants`` times
   so every partition is busy).
2. **The step**: load published at a paced rate, straight to JetStream (the HTTP ingress would
   take the CPU the lanes need on two cores, and its admission would cap the queue): 20% of
   that capacity, then 150%, then 20% again. The stack's supervision round runs the scaling
   policy every ``--round`` seconds, as ``eventray up`` does every few seconds; lag (events
   waiting in the stream) and the lane count are sampled every ``--sample`` seconds.

Figures: time from the step up to the first lane added and to ``lanes_max``, peak lag, time
from the step down until the lag is drained, and until the lanes are back at ``lanes_min``.
Written as JSON and a PNG plot to ``--out`` (a path without suffix).

Run: ``python -m benchmarks.bench_scaling --out benchmarks/results/scaling [--low 15 --high
45 --after 60] [--lanes-max 3] [--tenants 8]``. Bounded in time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_e2e import _catalog, _documents, _messages, _Sinks, _stored, _wait
from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import sample_secrets
from eventray.config.settings import Settings, load_settings
from eventray.pipeline.adapters.secrets_file import write_secrets_file
from eventray.pipeline.ingress import HEADER_RECEIVED, Accepted, new_tracker_id

_POOL = 4000  # distinct uplinks, published again and again with fresh tracker ids
_TICK_S = 0.05


def _settings(data: Path, args: argparse.Namespace) -> Settings:
    return load_settings(
        data_dir=data,
        pipeline={
            "partitions": args.partitions,
            "lanes": 1,
            "lanes_min": 1,
            "lanes_max": args.lanes_max,
            "rebalance_interval_s": 0,  # the lane count alone is measured
            "scale_up_lag": args.up_lag,
            "scale_down_lag": args.down_lag,
            "scale_window_s": args.window,
            "scale_cooldown_s": args.cooldown,
        },
        ingress={"port": 0},
        mqtt={"port": 0},
        api={"enabled": False},
        metrics={"enabled": False},
        triggers={"allow_networks": ("127.0.0.1/32",)},
    )


@dataclass
class _Publisher:
    """Publishes the pool's uplinks at ``rate`` events/s (changed while it runs) in a thread
    of its own, each with a fresh tracker id and received time."""

    url: str
    settings: Settings
    pool: list[Accepted]
    rate: float = 0.0
    published: int = 0
    behind: int = 0  # events the publisher could not send in time (its own limit)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def _run(self) -> None:
        from eventray.pipeline.adapters.nats_bus import JetStreamBus

        s = self.settings.nats
        bus = JetStreamBus(url=self.url, stream=s.stream, subject_prefix=s.subject_prefix)
        await bus.connect()
        owed, last, index = 0.0, time.monotonic(), 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                owed = owed + self.rate * (now - last) if self.rate > 0 else 0.0  # no old debt
                last = now
                count = int(owed)
                if count > self.rate:  # more than a second behind: drop the debt, count it
                    self.behind += count - int(self.rate)
                    count = int(self.rate)
                owed -= int(owed)
                futures = []
                received = str(int(time.time() * 1000))
                for _ in range(count):
                    m = self.pool[index % len(self.pool)]
                    index += 1
                    tracker = new_tracker_id()
                    headers = {**m.headers, HEADER_RECEIVED: received, "Nats-Msg-Id": tracker}
                    futures.append(await bus.js.publish_async(m.subject, m.body, headers=headers))
                if futures:
                    await asyncio.gather(*futures)
                    self.published += len(futures)
                await asyncio.sleep(max(0.0, _TICK_S - (time.monotonic() - now)))
        finally:
            await bus.close()


def _handled(stack: Stack) -> int:
    """Events the lanes in the assignment carried (a lane being added is not asked: the call
    would wait until Ray has started it)."""
    import ray

    names = list(stack.assignment)
    return sum(ray.get([stack.actors[n].handled.remote() for n in names], timeout=30))


def _lag(stack: Stack) -> int:
    """The consumer lag as the ingress reads it every half second (the lanes' own status is
    slow to answer at capacity)."""
    import ray

    return int(ray.get(stack.actors["ingress"].health.remote(), timeout=30)["lag"])


def _capacity(stack: Stack, publisher: _Publisher, events: int) -> float:
    """One lane's drain rate of a backlog (events/s)."""
    import ray

    [lane] = stack.lanes()
    ray.get(lane.pause.remote())
    ray.get(lane.reset_stats.remote())
    before = publisher.published
    publisher.rate = events  # one second's worth of ticks
    while publisher.published - before < events:
        time.sleep(0.05)
    publisher.rate = 0.0
    time.sleep(0.5)
    backlog = publisher.published - before
    started = time.monotonic()
    ray.get(lane.resume.remote())
    _wait(lambda: _stored(stack), backlog, timeout_s=600)
    return backlog / (time.monotonic() - started)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="eventray-bench-scaling-"))
    settings = _settings(data, args)
    with _Sinks() as sinks:
        documents = _documents(sinks, args.tenants)
        catalog = _catalog(documents)
        write_secrets_file(settings.secrets_path, sample_secrets(documents, "bench-token"))
        stack = Stack(settings)
        try:
            stack.start()
            stack.wait_revision(stack.apply(documents))
            assert stack.endpoints is not None
            pool = _messages(catalog, settings, _POOL, seed=5)
            publisher = _Publisher(stack.endpoints.nats_url, settings, pool)
            publisher.start()
            publisher.rate = 500.0  # warm: templates compiled, connections open
            time.sleep(2.0)
            publisher.rate = 0.0
            _wait(lambda: _stored(stack), publisher.published)
            capacity = _capacity(stack, publisher, args.backlog)
            print(f"one lane drains {capacity:,.0f} events/s")
            return _step(stack, publisher, capacity, args)
        finally:
            stack.stop()


def _step(
    stack: Stack, publisher: _Publisher, capacity: float, args: argparse.Namespace
) -> dict[str, Any]:
    low, high = 0.2 * capacity, 1.5 * capacity
    phases = [(0.0, low), (args.low, high), (args.low + args.high, low)]
    end = args.low + args.high + args.after
    samples: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    started = time.monotonic()
    done = threading.Event()
    last: list[str] = [""]

    def supervise() -> None:
        """The scaling rounds, in a thread of their own: adding a lane takes seconds, and the
        samples must go on meanwhile."""
        while not done.wait(args.round):
            decision = stack.scale()
            if decision is not None:
                last[0] = decision.reason
            if decision is not None and decision.direction != "hold":
                at = round(decision.at - started, 2)  # when decided (applying takes a while)
                done_at = round(time.monotonic() - started, 2)
                decisions.append({**asdict(decision), "t": at, "applied_t": done_at})
                print(f"{at:6.1f} s  {decision.direction} (applied at {done_at:.1f} s): "
                      f"{decision.reason}")  # fmt: skip

    publisher.behind = 0  # the capacity run's backlog was sent as fast as it could be
    rounds = threading.Thread(target=supervise, daemon=True)
    rounds.start()
    publisher.rate = low
    try:
        while (now := time.monotonic() - started) < end:
            publisher.rate = next(rate for at, rate in reversed(phases) if now >= at)
            try:
                lag, handled = _lag(stack), _handled(stack)
            except Exception:  # a lane removed between the two reads: sample again
                continue
            samples.append({
                "t": round(now, 2),
                "lag": lag,
                "lanes": len(stack.assignment),
                "offered": publisher.rate,
                "published": publisher.published,
                "handled": handled,
                "policy": last[0],
            })  # fmt: skip
            time.sleep(max(0.0, args.sample - ((time.monotonic() - started) - now)))
    finally:
        done.set()
        rounds.join(timeout=120)
        publisher.stop()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "capacity_one_lane_events_per_s": round(capacity),
        "offered_low_events_per_s": round(low),
        "offered_high_events_per_s": round(high),
        "publisher_behind_events": publisher.behind,
        "phases_s": {"low": args.low, "high": args.high, "after": args.after},
        "settings": {
            k: getattr(stack.settings.pipeline, k)
            for k in (
                "partitions",
                "lanes_min",
                "lanes_max",
                "scale_up_lag",
                "scale_down_lag",
                "scale_window_s",
                "scale_cooldown_s",
                "scale_down_busy",
            )
        },
        "figures": _figures(samples, decisions, args),
        "decisions": decisions,
        "samples": samples,
    }


def _figures(
    samples: list[dict[str, Any]], decisions: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    up_at, down_at = args.low, args.low + args.high
    ups = [d for d in decisions if d["direction"] == "up" and d["t"] >= up_at]
    top = max(s["lanes"] for s in samples)
    at_top = next((s["t"] - up_at for s in samples if s["lanes"] == top and s["t"] >= up_at), None)
    after = [s for s in samples if s["t"] >= down_at]
    drained = next((s["t"] - down_at for s in after if s["lag"] <= args.down_lag), None)
    back = next(
        (s["t"] - down_at for s in after if s["lanes"] == 1 and s["t"] >= down_at + (drained or 0)),
        None,
    )
    # taken from the stream = published - lag (lanes' own counters vanish with a lane)
    rate = [
        ((b["published"] - b["lag"]) - (a["published"] - a["lag"])) / (b["t"] - a["t"])
        for a, b in itertools.pairwise(samples)
        if b["t"] > a["t"]
    ]
    return {
        "first_up_decision_s_after_step_up": round(ups[0]["t"] - up_at, 1) if ups else None,
        "first_added_lane_running_s_after_step_up": (
            round(ups[0]["applied_t"] - up_at, 1) if ups else None
        ),
        "max_lanes": top,
        "max_lanes_reached_s_after_step_up": None if at_top is None else round(at_top, 1),
        "peak_lag_events": max(s["lag"] for s in samples),
        "lag_drained_s_after_step_down": None if drained is None else round(drained, 1),
        "back_to_one_lane_s_after_step_down": None if back is None else round(back, 1),
        "peak_handled_events_per_s": round(max(rate)) if rate else 0,
        "decisions": len(decisions),
    }


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] for s in samples]
    fig, lag_axis = plt.subplots(figsize=(9, 4.2), dpi=90)
    lag_axis.plot(t, [s["lag"] for s in samples], color="tab:red", label="consumer lag (events)")
    lag_axis.set_xlabel("seconds")
    lag_axis.set_ylabel("lag (events)", color="tab:red")
    load_axis = lag_axis.twinx()
    cap = result["capacity_one_lane_events_per_s"]
    load_axis.step(t, [s["lanes"] for s in samples], where="post", color="tab:blue",
                   label="lanes")  # fmt: skip
    load_axis.step(t, [s["offered"] / cap for s in samples], where="post", color="tab:gray",
                   linestyle="--", label="offered load (x one lane's capacity)")  # fmt: skip
    load_axis.set_ylabel("lanes / offered load")
    load_axis.set_ylim(0, max(4, result["figures"]["max_lanes"] + 0.5))
    for d in result["decisions"]:
        lag_axis.axvline(d["t"], color="tab:green" if d["direction"] == "up" else "tab:purple",
                         alpha=0.4, linewidth=1)  # fmt: skip
    handles = lag_axis.get_legend_handles_labels()
    more = load_axis.get_legend_handles_labels()
    lag_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="upper right", fontsize=8)
    f = result["figures"]
    lag_axis.set_title(
        f"step 20% -> 150% -> 20% of one lane ({cap:,} ev/s); peak lag {f['peak_lag_events']:,}, "
        f"lanes 1 -> {f['max_lanes']} -> {samples[-1]['lanes']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON and PNG path, no suffix")
    parser.add_argument("--low", type=float, default=15.0, help="seconds at 20%% before the step")
    parser.add_argument("--high", type=float, default=45.0, help="seconds at 150%%")
    parser.add_argument("--after", type=float, default=90.0, help="seconds at 20%% after it")
    parser.add_argument("--lanes-max", type=int, default=3, help="pipeline.lanes_max")
    parser.add_argument("--partitions", type=int, default=4, help="pipeline.partitions")
    parser.add_argument("--tenants", type=int, default=8, help="copies of the sample customer")
    parser.add_argument("--up-lag", type=int, default=1000, help="pipeline.scale_up_lag")
    parser.add_argument("--down-lag", type=int, default=300, help="pipeline.scale_down_lag")
    parser.add_argument("--window", type=float, default=5.0, help="pipeline.scale_window_s")
    parser.add_argument("--cooldown", type=float, default=10.0, help="pipeline.scale_cooldown_s")
    parser.add_argument("--round", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--backlog", type=int, default=10000, help="events of the capacity run")
    args = parser.parse_args()
    result = _run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    _plot(result, args.out.with_suffix(".png"))
    print(orjson.dumps(result["figures"], option=orjson.OPT_INDENT_2).decode())
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
