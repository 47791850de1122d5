"""Partition placement by measured load (pipeline/balance.py)."""

from __future__ import annotations

import pytest

from eventray.pipeline.balance import Move, RateMeter, lane_loads, plan_move


def test_the_sample_s_skew_is_evened_out_by_one_move() -> None:
    # three busy organizations hashed onto partitions 1, 3 (lane-1) and 2 (lane-0): 20% / 80%
    assignment = {"lane-0": [0, 2], "lane-1": [1, 3]}
    rates = {0: 0.0, 1: 800.0, 2: 400.0, 3: 800.0}
    move = plan_move(assignment, rates)
    assert move == Move(1, "lane-1", "lane-0")
    after = {"lane-0": [0, 1, 2], "lane-1": [3]}
    assert lane_loads(after, rates) == {"lane-0": 1200.0, "lane-1": 800.0}
    assert plan_move(after, rates) is None  # 60/40 is the best three organizations allow


@pytest.mark.parametrize(
    ("rates", "why"),
    [
        ({0: 500.0, 1: 520.0, 2: 480.0, 3: 500.0}, "already even"),
        ({0: 0.0, 1: 5000.0, 2: 0.0, 3: 0.0}, "one hot partition cannot be split"),
        ({0: 0.0, 1: 30.0, 2: 0.0, 3: 10.0}, "too little traffic to matter"),
    ],
)
def test_no_move_when_it_would_not_help(rates: dict[int, float], why: str) -> None:
    assert plan_move({"lane-0": [0, 2], "lane-1": [1, 3]}, rates) is None, why


def test_rates_from_counters_and_a_reset_reads_as_zero() -> None:
    meter = RateMeter()
    assert meter.update(0.0, {0: 100, 1: 0}) is None
    assert meter.update(2.0, {0: 300, 1: 50}) == {0: 100.0, 1: 25.0}
    assert meter.update(3.0, {0: 10, 1: 60}) == {0: 0.0, 1: 10.0}  # lane restarted: p0 reset
