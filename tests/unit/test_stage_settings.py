"""``pipeline.script_actors`` and ``pipeline.rule_actors``: what they settle into, and what is
refused at load (with the variable to change)."""

from __future__ import annotations

import pytest

from eventray.config.settings import load_settings
from eventray.pipeline.errors import SettingsError


def test_by_default_scripts_and_rules_run_in_the_lanes() -> None:
    p = load_settings().pipeline
    assert (p.script_actors, p.rule_actors, p.rules_in_lane) == (0, 0, True)


def test_rules_in_lane_false_keeps_its_meaning_one_rule_actor_per_partition() -> None:
    p = load_settings(pipeline={"rules_in_lane": False, "partitions": 6}).pipeline
    assert (p.rule_actors, p.rules_in_lane) == (6, False)


def test_rule_actors_alone_say_where_rules_run() -> None:
    p = load_settings(pipeline={"rule_actors": 2, "partitions": 8, "script_actors": 3}).pipeline
    assert (p.rule_actors, p.rules_in_lane, p.script_actors) == (2, False, 3)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTRAY_PIPELINE__SCRIPT_ACTORS", "4")
    monkeypatch.setenv("EVENTRAY_PIPELINE__RULE_ACTORS", "1")
    p = load_settings().pipeline
    assert (p.script_actors, p.rule_actors) == (4, 1)


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        (
            {"rule_actors": 5, "partitions": 4},
            "EVENTRAY_PIPELINE: pipeline.rule_actors = 5 exceeds pipeline.partitions = 4",
        ),
        (
            {"rules_in_lane": True, "rule_actors": 2},
            "pipeline.rules_in_lane = true contradicts pipeline.rule_actors = 2",
        ),
        ({"script_actors": -1}, "EVENTRAY_PIPELINE__SCRIPT_ACTORS: Input should be greater"),
        ({"rule_actors": -1}, "EVENTRAY_PIPELINE__RULE_ACTORS: Input should be greater"),
    ],
)
def test_what_cannot_work_is_refused_at_load(pipeline: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(pipeline=pipeline)
    assert message in str(refused.value)
