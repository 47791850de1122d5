"""Per-source latency percentiles in constant memory (pipeline/latency.py)."""

from __future__ import annotations

import random

from eventray.pipeline.latency import LatencyHistogram


def test_percentiles_are_within_five_percent_of_the_exact_ones() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(3.0, 1.2) for _ in range(20_000)]  # ms, a long tail
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        exact = ordered[int(q * len(ordered)) - 1]
        assert exact <= histogram.percentile(q) <= exact * 1.05 + 1e-9, q
    assert histogram.summary()["n"] == 20_000


def test_empty_and_sub_millisecond() -> None:
    histogram = LatencyHistogram()
    assert histogram.summary() == {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    histogram.add(0.2)
    histogram.add(-3.0)  # a clock step back: counted in the first bucket
    assert histogram.percentile(0.99) == 1.0
