"""The read side's CLI arguments (``eventray events query/story``, ``eventray logs``): parsed
without a stack; tests/e2e/test_reading_stack.py runs them against one."""

from __future__ import annotations

import pytest

from eventray.cluster.cli import LOG_KINDS, build_parser, main
from eventray.pipeline.storage import logs


def test_the_cli_offers_every_log_kind_the_service_reads() -> None:
    assert list(LOG_KINDS) == list(logs.LOG_KINDS)


def test_events_query_takes_repeated_where_and_a_format() -> None:
    args = build_parser().parse_args(
        ["events", "query", "--where", "temperature > -15", "--where", "doorOpen = true",
         "--format", "csv", "--all"]
    )  # fmt: skip
    assert args.where == ["temperature > -15", "doorOpen = true"]
    assert (args.format, args.follow, args.org_id, args.cursor) == ("csv", True, None, None)
    story = build_parser().parse_args(["events", "story", "t-1", "--pretty"])
    assert (story.event_tracker_id, story.pretty) == ("t-1", True)


def test_log_flags_map_to_tri_state_filters() -> None:
    args = build_parser().parse_args(
        ["logs", "triggers", "--failed", "--trigger", "slack", "--newest-first", "--no-error"]
    )
    assert (args.action, args.success, args.matched, args.errored) == (
        "triggers",
        False,
        None,
        False,
    )
    assert (args.trigger_id, args.newest_first, args.format) == ("slack", True, "jsonl")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["logs", "rules", "--matched", "--unmatched"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["logs", "events"])


def test_without_a_stack_the_commands_say_so(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["events", "query", "--where", "t > 1"],
        ["logs", "dlq"],
        ["events", "story", "x"],
    ):
        assert main([*argv, "--data-dir", str(tmp_path)]) == 3  # runtime failure: no stack runs
        assert "no running stack found" in capsys.readouterr().err
