"""The lag-driven lane scaling policy (``eventray.pipeline.scaling``), on an injected clock,
and the settings that bound it (refused at load when they cannot work)."""

from __future__ import annotations

import itertools

import pytest

from eventray.config.settings import load_settings
from eventray.pipeline.errors import SettingsError
from eventray.pipeline.scaling import (
    Decision,
    ScalingLimits,
    ScalingPolicy,
    Utilisation,
)

LIMITS = ScalingLimits(
    lanes_min=1, lanes_max=3, up_lag=1000, down_lag=10, window_s=10.0, cooldown_s=20.0,
    down_busy=0.6,
)  # fmt: skip


def feed(
    policy: ScalingPolicy,
    lags: list[int],
    lanes: int,
    *,
    start: float = 0.0,
    every: float = 1.0,
    busy: float | None = None,
) -> list[Decision]:
    """One sample per second; the last decision is what the stack would act on."""
    return [policy.observe(start + i * every, lag, lanes, busy) for i, lag in enumerate(lags)]


def test_lag_that_stays_high_and_does_not_fall_adds_a_lane_after_a_full_window() -> None:
    policy = ScalingPolicy(LIMITS)
    decisions = feed(policy, [1500 + 100 * i for i in range(11)], lanes=1)
    assert [d.direction for d in decisions[:10]] == ["hold"] * 10  # window not yet filled
    assert decisions[-1].direction == "up"
    assert decisions[-1].lanes == 2
    assert decisions[-1].lag == 2500
    assert "not draining" in decisions[-1].reason


def test_a_short_burst_does_not_add_a_lane() -> None:
    policy = ScalingPolicy(LIMITS)
    lags = [0, 0, 5000, 6000, 3000, 800, 200, 0, 0, 0, 0, 0]
    assert {d.direction for d in feed(policy, lags, lanes=1)} == {"hold"}


def test_high_lag_that_is_draining_fast_adds_nothing() -> None:
    policy = ScalingPolicy(LIMITS)
    lags = [20000 - 1500 * i for i in range(11)]  # falls by far more than a tenth
    assert feed(policy, lags, lanes=1)[-1].direction == "hold"


def test_a_noisy_plateau_above_the_threshold_adds_a_lane() -> None:
    """Admission caps the queue: a lane set that cannot keep up shows a plateau, not growth."""
    policy = ScalingPolicy(LIMITS)
    lags = [4000, 4200, 3900, 4100, 3800, 4000, 4150, 3950, 4050, 3900, 3800]
    assert feed(policy, lags, lanes=1)[-1].direction == "up"


def test_lag_below_the_up_threshold_in_one_sample_holds() -> None:
    policy = ScalingPolicy(LIMITS)
    lags = [1500, 1600, 1700, 900, 1800, 1900, 2000, 2100, 2200, 2300, 2400]
    assert feed(policy, lags, lanes=1)[-1].direction == "hold"


def test_after_a_change_the_cooldown_holds_then_a_fresh_window_is_needed() -> None:
    policy = ScalingPolicy(LIMITS)
    up = feed(policy, [2000] * 11, lanes=1)[-1]
    assert up.direction == "up"
    policy.applied(10.0)
    during = feed(policy, [3000] * 19, lanes=2, start=11.0)  # 11 s .. 29 s
    assert {d.direction for d in during} == {"hold"}
    assert "cooling down" in during[0].reason
    # the cooldown ends at 30 s; the samples taken meanwhile (from 11 s) fill the window
    assert policy.observe(30.0, 3000, 2).direction == "up"
    policy.applied(30.0)
    # after this change the window restarted: even once cooled down, one sample is not enough
    assert policy.observe(50.0, 3000, 3).direction == "hold"
    assert policy.observe(50.0, 3000, 3).reason == "window not filled yet"


def test_no_lane_beyond_lanes_max_and_none_below_lanes_min() -> None:
    policy = ScalingPolicy(LIMITS)
    at_max = feed(policy, [5000] * 11, lanes=3)[-1]
    assert at_max.direction == "hold"
    assert "lanes_max" in at_max.reason
    policy = ScalingPolicy(LIMITS)
    at_min = feed(policy, [0] * 11, lanes=1, busy=0.0)[-1]
    assert at_min.direction == "hold"


def test_out_of_bounds_counts_are_brought_back_at_once() -> None:
    policy = ScalingPolicy(ScalingLimits(lanes_min=2, lanes_max=3))
    assert policy.observe(0.0, 0, 1).direction == "up"
    assert policy.observe(0.0, 0, 4).direction == "down"


def test_drained_and_idle_for_a_window_removes_a_lane() -> None:
    policy = ScalingPolicy(LIMITS)
    decisions = feed(policy, [0, 3, 0, 10, 0, 0, 0, 0, 0, 0, 0], lanes=3, busy=0.2)
    assert [d.direction for d in decisions[:10]] == ["hold"] * 10
    assert decisions[-1].direction == "down"
    assert decisions[-1].lanes == 2
    assert "30%" in decisions[-1].reason  # 0.2 * 3 / 2


def test_drained_but_busy_lanes_are_kept() -> None:
    """No lag because the lanes keep up, not because there is nothing to do: one fewer lane
    would be 0.5 * 2 = 100% busy and fall behind (then scale up again: a flap)."""
    policy = ScalingPolicy(LIMITS)
    last = feed(policy, [0] * 11, lanes=2, busy=0.5)[-1]
    assert last.direction == "hold"
    assert "100% busy" in last.reason


def test_one_lagging_sample_in_the_window_keeps_the_lanes() -> None:
    policy = ScalingPolicy(LIMITS)
    lags = [0, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0]
    assert feed(policy, lags, lanes=2, busy=0.0)[-1].direction == "hold"


def test_no_flapping_on_a_load_that_sits_between_the_thresholds() -> None:
    policy = ScalingPolicy(LIMITS)
    lags = [500 + (i * 37) % 400 for i in range(300)]  # 500-900: neither up nor down
    assert {d.direction for d in feed(policy, lags, lanes=2, busy=0.4)} == {"hold"}


def test_a_square_wave_of_load_changes_at_most_once_per_cooldown() -> None:
    policy = ScalingPolicy(LIMITS)
    lanes, changes = 1, []
    for second in range(200):
        lag = 5000 if (second // 15) % 2 == 0 else 0
        decision = policy.observe(float(second), lag, lanes, 0.1)
        if decision.direction != "hold":
            changes.append(second)
            lanes = decision.lanes
            policy.applied(float(second))
    assert changes
    assert all(b - a >= LIMITS.cooldown_s for a, b in itertools.pairwise(changes))


def test_utilisation_is_the_rate_over_the_per_lane_peak_seen_with_a_backlog() -> None:
    meter = Utilisation(backlog=1000)
    assert meter.update(0.0, {"lane-0": 0}, 5000) is None  # the first reading
    # saturated: 400 events/s on one lane with 5,000 waiting: the peak is 400 per lane
    assert meter.update(1.0, {"lane-0": 400}, 5000) == pytest.approx(1.0)
    assert meter.per_lane_peak == pytest.approx(400.0)
    # two lanes (the new one counts from 0) carrying 160 events/s: 20% of two lanes' 800
    assert meter.update(2.0, {"lane-0": 500, "lane-1": 60}, 0) == pytest.approx(0.2)
    # no backlog: the peak is not lowered by a quiet second
    assert meter.update(3.0, {"lane-0": 500, "lane-1": 60}, 0) == 0.0
    assert meter.per_lane_peak == pytest.approx(400.0)
    # a restarted lane (counter back to 0) reads as nothing carried, not as negative
    assert meter.update(4.0, {"lane-0": 0, "lane-1": 60}, 0) == 0.0


def test_utilisation_is_unknown_until_the_lanes_were_seen_saturated() -> None:
    meter = Utilisation(backlog=1000)
    meter.update(0.0, {"lane-0": 0}, 0)
    assert meter.update(1.0, {"lane-0": 100}, 10) is None


def test_limits_refuse_bounds_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="lanes_min"):
        ScalingLimits(lanes_min=3, lanes_max=2)
    with pytest.raises(ValueError, match="down_lag"):
        ScalingLimits(lanes_min=1, lanes_max=2, up_lag=10, down_lag=10)


def test_by_default_the_lane_count_is_fixed() -> None:
    pipeline = load_settings(pipeline={"lanes": 2, "partitions": 4}).pipeline
    assert pipeline.lanes_bounds == (2, 2)
    assert not pipeline.scaling_limits().enabled


def test_scaling_settings_give_the_policy_its_limits() -> None:
    pipeline = load_settings(
        pipeline={"lanes": 1, "partitions": 4, "lanes_max": 4, "scale_up_lag": 500}
    ).pipeline
    limits = pipeline.scaling_limits()
    assert (limits.lanes_min, limits.lanes_max, limits.up_lag) == (1, 4, 500)
    assert limits.enabled


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ({"partitions": 4, "lanes": 2, "lanes_max": 5}, "lanes_max (5) must not exceed partitions (4)"),
        ({"partitions": 4, "lanes": 2, "lanes_min": 3, "lanes_max": 2}, "lanes_min (3) must not exceed lanes_max (2)"),
        ({"partitions": 4, "lanes": 3, "lanes_max": 2}, "lanes (3, the lanes at start) must lie within"),
        ({"partitions": 4, "lanes": 1, "lanes_min": 2, "lanes_max": 4}, "must lie within lanes_min (2)"),
        ({"partitions": 4, "lanes": 1, "lanes_max": 2, "scale_down_lag": 2000}, "scale_down_lag (2000) must be below"),
    ],
)  # fmt: skip
def test_bounds_that_cannot_work_are_refused_at_load(
    pipeline: dict[str, int], message: str
) -> None:
    with pytest.raises(SettingsError, match=r"EVENTRAY_PIPELINE: .*" + _escape(message)):
        load_settings(pipeline=pipeline)


def test_lane_cpus_cannot_be_negative() -> None:
    with pytest.raises(SettingsError, match="EVENTRAY_RAY__LANE_CPUS"):
        load_settings(ray={"lane_cpus": -1})


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_local_head_too_small_for_the_lanes_is_refused_at_load() -> None:
    with pytest.raises(SettingsError, match=r"ray.num_cpus \(1\) is below what the actors declare"):
        load_settings(pipeline={"partitions": 4, "lanes": 2, "lanes_max": 4}, ray={"num_cpus": 1})
    fits = load_settings(pipeline={"partitions": 4, "lanes": 2}, ray={"num_cpus": 2})
    assert fits.cpus_declared() == pytest.approx(2 * 0.5 + 4 * 0.05)


def test_the_metrics_export_the_lane_count_and_the_decisions_by_direction() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from eventray.cluster.metrics import StackCollector

    status = {
        "lanes": [],
        "scaling": {"enabled": True, "lanes": 3, "decisions": {"up": 2, "down": 1}},
    }
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StackCollector(lambda: status))
    text = generate_latest(registry).decode()
    assert "eventray_lanes 3.0" in text
    assert 'eventray_scaling_decisions_total{direction="up"} 2.0' in text
    assert 'eventray_scaling_decisions_total{direction="down"} 1.0' in text


def test_joining_takes_the_busiest_partitions_from_the_fullest_lanes() -> None:
    from eventray.pipeline.balance import Move, plan_join, plan_leave

    assignment = {"lane-0": [0, 2, 4, 6], "lane-1": [1, 3, 5, 7]}
    rates = {0: 10.0, 2: 500.0, 4: 5.0, 6: 1.0, 1: 50.0, 3: 40.0, 5: 30.0, 7: 20.0}
    moves = plan_join(assignment, "lane-2", rates)
    assert len(moves) == 2  # 8 // 3
    assert moves[0] == Move(2, "lane-0", "lane-2")  # the busiest lane's busiest partition
    assert {m.source for m in moves} == {"lane-0", "lane-1"}  # the split stays even (3-3-2)
    leave = plan_leave({"lane-0": [0, 2, 4], "lane-1": [1, 3, 5], "lane-2": [6, 7]}, "lane-2")
    assert sorted(m.partition for m in leave) == [6, 7]
    assert {m.target for m in leave} == {"lane-0", "lane-1"}
    with pytest.raises(ValueError, match="only lane"):
        plan_leave({"lane-0": [0, 1]}, "lane-0")
