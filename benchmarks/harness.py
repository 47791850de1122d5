"""A small measuring harness: rounds of a batch function, medians, percentiles, memory.

Every figure is measured in the same process and the same run as its baseline, on one core
(the functions are single-threaded). Numbers on a shared 2-core machine are noisy; the median
of several rounds is what the README quotes.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = ["Result", "measure", "measure_pair", "print_table"]


@dataclass(frozen=True)
class Result:
    name: str
    events_per_s: float
    batch_p50_ms: float
    batch_p99_ms: float
    event_p50_us: float
    peak_rss_mb: float
    rounds: int
    target: float | None = None
    """The events/s an issue asks of this workload (None: a baseline, or no target)."""

    def with_target(self, events_per_s: float) -> Result:
        """This result judged against ``events_per_s``."""
        return replace(self, target=events_per_s)

    def verdict(self) -> str:
        if self.target is None:
            return ""
        met = "met" if self.events_per_s >= self.target else "MISSED"
        return f">= {self.target:,.0f}: {met}"

    def row(self) -> str:
        return (
            f"| {self.name:<62} | {self.events_per_s:>12,.0f} | {self.event_p50_us:>9.2f} | "
            f"{self.batch_p50_ms:>8.2f} | {self.batch_p99_ms:>8.2f} | {self.peak_rss_mb:>7.0f} | "
            f"{self.verdict():<17} |"
        )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Series:
    """Samples of one workload across rounds."""

    def __init__(self, name: str, batch: Callable[[], int]) -> None:
        self.name, self.batch = name, batch
        self.rates: list[float] = []
        self.latencies: list[float] = []
        self.per_event: list[float] = []

    def round(self, seconds: float) -> None:
        events = 0
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            n = self.batch()
            dt = time.perf_counter() - t0
            self.latencies.append(dt)
            self.per_event.append(dt / max(n, 1))
            events += n
            if time.perf_counter() - start >= seconds:
                break
        self.rates.append(events / (time.perf_counter() - start))

    def result(self) -> Result:
        latencies = sorted(self.latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return Result(
            name=self.name,
            events_per_s=statistics.median(self.rates),
            batch_p50_ms=statistics.median(latencies) * 1000,
            batch_p99_ms=p99 * 1000,
            event_p50_us=statistics.median(self.per_event) * 1e6,
            peak_rss_mb=_peak_rss_mb(),
            rounds=len(self.rates),
        )


def _run(series: list[_Series], *, seconds: float, rounds: int, warmup: int) -> list[Result]:
    for each in series:
        for _ in range(warmup):
            each.batch()
    gc.collect()
    for _ in range(rounds):  # interleaved, so a noisy neighbour hits subject and baseline alike
        for each in series:
            each.round(seconds)
    return [each.result() for each in series]


def measure(
    name: str,
    batch: Callable[[], int],
    *,
    seconds: float = 0.5,
    rounds: int = 7,
    warmup: int = 3,
) -> Result:
    """Call ``batch`` (which processes a batch and returns its event count) for ``rounds``
    rounds of ``seconds`` each; events/s is the median over rounds."""
    return _run([_Series(name, batch)], seconds=seconds, rounds=rounds, warmup=warmup)[0]


def measure_pair(
    subject: tuple[str, Callable[[], int]],
    baseline: tuple[str, Callable[[], int]],
    *,
    seconds: float = 0.5,
    rounds: int = 7,
    warmup: int = 3,
) -> list[Result]:
    """Measure a workload and its baseline in alternating rounds (same run, same noise)."""
    return _run(
        [_Series(*subject), _Series(*baseline)], seconds=seconds, rounds=rounds, warmup=warmup
    )


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n### {title}\n")
    print(
        "| benchmark                                                      |     events/s | us/event | batch p50 "
        "| batch p99 | RSS MB | target            |"
    )
    print(
        "|"
        + "-" * 64
        + "|"
        + "-" * 14
        + "|"
        + "-" * 11
        + "|"
        + "-" * 10
        + "|"
        + "-" * 10
        + "|"
        + "-" * 9
        + "|"
        + "-" * 19
        + "|"
    )
    for result in results:
        print(result.row())
