"""The ``eventray`` command line: its parser and entry point.

The commands defined here (``scripts``, ``templates``, ``rules``, ``validate``, ``demo
--local``) run in one process without Ray or servers: they are how users test codecs,
templates and rules before deploying them. Those that run or talk to a stack live in
``stack_cli``, ``manage_cli``, ``data_cli``, ``secrets_cli`` and ``replaying``, imported only
when one runs (Ray is heavy). Exit codes: :mod:`eventray.cluster.exit_codes`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from eventray.cluster.arg_types import (
    DATA_DIR_HELP,
    bounded_int,
    non_negative_float,
    positive_int,
)
from eventray.cluster.exit_codes import exit_code
from eventray.cluster.table import add_format_flag, wants_table, write_table
from eventray.pipeline.errors import (
    ConfigError,
    ConfigIssue,
    EventrayError,
    InvalidInput,
    UnknownId,
)

__all__ = ["main"]


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{number}: not valid JSON: {exc}") from exc


def _emit(out: TextIO, value: Any, *, pretty: bool = False) -> None:
    option = orjson.OPT_INDENT_2 if pretty else 0
    out.write(
        orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n"
    )


def cmd_scripts_run(args: argparse.Namespace, out: TextIO) -> int:
    from eventray.pipeline.scripts.bundle import bundle_for_script
    from eventray.pipeline.scripts.runner import ScriptRunner

    runner = ScriptRunner(bundle_for_script(Path(args.file).read_text(), stage=args.stage))
    codec = runner.bundle.stages[0].codec_style is not None
    payloads: list[Any] = []
    for number, line in _jsonl(Path(args.input)):
        if codec:
            payloads.append(line)
        elif not isinstance(line, dict) or "payload" not in line:
            raise InvalidInput(
                f'{args.input}:{number}: expected {{"payload": ...}} for a stage script'
            )
        else:
            payloads.append(line["payload"])
    sink = open(args.output, "w") if args.output else out  # noqa: SIM115
    try:
        for result in runner.run(payloads):
            _emit(sink, {"error": result["e"]} if "e" in result else result["r"])
    finally:
        if sink is not out:
            sink.close()
    return 0


def _single_template(path: Path, template_id: str | None) -> Any:
    from eventray.pipeline.loader import entity_from_dict, read_documents
    from eventray.pipeline.models import AssetTemplate

    issues: list[ConfigIssue] = []
    docs = read_documents([path], issues)
    templates = []
    for source, doc in docs:
        doc.setdefault("kind", "AssetTemplate")
        entity = entity_from_dict(source, doc, issues)
        if isinstance(entity, AssetTemplate):
            templates.append(entity)
    if issues:
        raise ConfigError(issues)
    if template_id is not None:
        chosen = [t for t in templates if t.id == template_id]
        if not chosen:
            raise UnknownId("template", template_id, [t.id for t in templates], where=f"in {path}")
        templates = chosen
    if len(templates) != 1:
        ids = ", ".join(t.id for t in templates)
        raise InvalidInput(
            f"{path}: expected exactly one AssetTemplate, found {len(templates)}"
            + (f" ({ids}); choose one with --id" if len(templates) > 1 else "")
        )
    return templates[0]


def cmd_templates_test(args: argparse.Namespace, out: TextIO) -> int:
    from eventray.pipeline.scripts.bundle import bundle_for_template
    from eventray.pipeline.scripts.runner import ScriptRunner

    template = _single_template(Path(args.template), args.id)
    runner = ScriptRunner(bundle_for_template(template))
    payloads = [line for _, line in _jsonl(Path(args.input))]
    failures = 0
    for index, result in enumerate(runner.run(payloads, trace=True), start=1):
        stages = result.get("s", {})
        report: dict[str, Any] = {"input": index}
        for stage in ("decode", "validate", "transform"):
            if stage in stages:
                report[stage] = stages[stage]
        if "e" in result:
            failures += 1
            report["error"] = result["e"]
        else:
            report["standardEvent"] = result["r"]
        _emit(out, report, pretty=args.pretty)
    return 1 if failures and args.strict else 0


def cmd_rules_test(args: argparse.Namespace, out: TextIO) -> int:
    from eventray.pipeline.catalog import load_catalog
    from eventray.pipeline.rules.testmode import run_test_mode

    catalog = load_catalog([Path(args.config)], compile_scripts=False)
    if args.business_rule_id not in catalog.business_rules:
        raise UnknownId("business rule", args.business_rule_id, list(catalog.business_rules),
                        where=f"in {args.config}")  # fmt: skip
    state = orjson.loads(Path(args.state).read_bytes()) if args.state else None
    events = [line for _, line in _jsonl(Path(args.events))]
    for report in run_test_mode(catalog, args.business_rule_id, events, state=state):
        _emit(out, report, pretty=args.pretty)
    return 0


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from eventray.pipeline.catalog import load_catalog

    catalog = load_catalog([Path(p) for p in args.paths])
    counts = {
        "organizations": len(catalog.orgs),
        "dataSources": len(catalog.data_sources),
        "assetTemplates": len(catalog.templates),
        "assets": len(catalog.assets),
        "routeGroups": len(catalog.route_groups),
        "triggers": len(catalog.triggers),
        "rules": len(catalog.rules),
        "businessRules": len(catalog.business_rules),
    }
    if wants_table(args.output_format, out):
        write_table(out, ("kind", "count"), counts.items())
        out.write(f"valid: {sum(counts.values())} entities in {len(args.paths)} path(s)\n")
    else:
        _emit(out, {"valid": True, **counts})
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    if not args.local:
        from eventray.cluster.stack_cli import cmd_demo_stack

        return cmd_demo_stack(args, out)
    from eventray.cluster.demo import run_local_demo
    from eventray.config.settings import load_settings

    settings = load_settings()
    config = Path(args.config) if args.config else None
    run_local_demo(settings, events=args.events, batch=args.batch, out=out, config=config)
    return 0


def _stack(name: str) -> Any:
    """A handler from cluster.stack_cli, imported only when that command runs (Ray is heavy)."""

    def handler(args: argparse.Namespace, out: TextIO) -> int:
        from eventray.cluster import stack_cli

        return int(getattr(stack_cli, name)(args, out))

    return handler


LOG_KINDS = {
    "rules": "business rule evaluations (logs_rule)",
    "captures": "Log-action records with typed capture fields (logs_capture)",
    "triggers": "trigger delivery attempts (logs_trigger)",
    "raw": "raw bodies of debug assets and refused ingestions (events_raw)",
    "dlq": "events that could not be processed (dlq)",
    "scripts": "template script runs (logs_script)",
    "routers": "route group decisions (logs_router)",
}
"""``eventray logs <kind>``: the kinds of eventray.pipeline.storage.logs.LOG_KINDS (a test
checks they agree; not imported here, so the parser stays light)."""


def _add_page_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", help="ISO-8601; created >= since")
    parser.add_argument("--until", help="ISO-8601; created < until")
    parser.add_argument(
        "--limit", type=bounded_int(1, 10_000), default=100, help="rows per page (1..10000)"
    )
    parser.add_argument("--cursor", help="continue after the page that printed it")
    parser.add_argument(
        "--all", dest="follow", action="store_true", help="every page to the end (an export)"
    )
    parser.add_argument(
        "--format", choices=("jsonl", "json", "csv"), default="jsonl", help="output format"
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--token", help=_API_TOKEN_HELP)


_API_TOKEN_HELP = (
    "an API token (ert_..., default $EVENTRAY_API_TOKEN): read through the running stack's "
    "management API with the token's scope; without one, the whole platform as the local admin"
)


def _add_log_parser(parser: argparse.ArgumentParser) -> None:
    """Every log filter; one a table does not have is refused with the list of its filters."""
    parser.add_argument("--org", dest="org_id", help="default: every organization")
    parser.add_argument("--children", dest="include_children", action="store_true",
                        help="with --org: its descendant organizations too")  # fmt: skip
    parser.add_argument("--tracker", dest="event_tracker_id", help="one event's eventTrackerId")
    for flag, dest in (("--asset", "asset_id"), ("--business-rule", "business_rule_id"),
                       ("--rule", "rule_id"), ("--action", "action_id"),
                       ("--trigger", "trigger_id"), ("--data-source", "data_source_id"),
                       ("--route-group", "route_group_id")):  # fmt: skip
        parser.add_argument(flag, dest=dest, help=f"only rows of this {flag[2:].replace('-', ' ')}")
    parser.add_argument(
        "--stage", help="raw, dlq, scripts: decode, validate, bind, trigger:<id>..."
    )
    for name, yes, no in (("success", "--success", "--failed"),
                          ("matched", "--matched", "--unmatched"),
                          ("errored", "--errored", "--no-error")):  # fmt: skip
        flags = parser.add_mutually_exclusive_group()
        flags.add_argument(yes, dest=name, action="store_const", const=True, default=None,
                           help=f"only rows where {name} is true")  # fmt: skip
        flags.add_argument(no, dest=name, action="store_const", const=False,
                           help=f"only rows where {name} is false")  # fmt: skip
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        help="captures: 'field op value' on a capture field (repeatable)",
    )
    parser.add_argument("--newest-first", action="store_true", help="newest rows first")
    _add_page_arguments(parser)
    parser.set_defaults(handler=_stack("cmd_logs"))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eventray")
    except PackageNotFoundError:  # run from a tree that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventray",
        description="eventray, a multi-tenant event platform on Ray. Test codecs, templates "
        "and rules on files (no servers); run the stack (up, demo); manage its entities, "
        "tokens and secrets; read what it stored. 'eventray COMMAND --help' for each.",
        epilog="exit codes: 0 ok, 1 invalid input (files, ids, values), 2 usage, "
        "3 runtime failure (no stack, a server or the API unreachable, a timeout), "
        "130 interrupted",
    )
    parser.add_argument(
        "--version", action="version", version=f"eventray {_version()}",
        help="print the installed version and exit",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scripts = commands.add_parser("scripts", help="run a codec or stage script").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    run = scripts.add_parser("run", help="run FILE.js over JSON lines")
    run.add_argument("file", help="the codec or stage script (JavaScript)")
    run.add_argument(
        "--input",
        required=True,
        help='JSON lines: {"fPort", "bytes"} for a codec, {"payload"} for a script',
    )
    run.add_argument("--output", help="write results here instead of standard output")
    run.add_argument("--stage", default="decode", help="stage name used in errors")
    run.set_defaults(handler=cmd_scripts_run)

    templates = commands.add_parser("templates", help="test an asset template").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    test = templates.add_parser("test", help="run decode -> validate -> transform, print each")
    test.add_argument("template", help="a YAML/JSON file holding AssetTemplate(s)")
    test.add_argument("--input", required=True, help="JSON lines, one ingested body per line")
    test.add_argument("--id", help="the template to test when the file holds several")
    test.add_argument("--pretty", action="store_true", help="indented JSON")
    test.add_argument("--strict", action="store_true", help="exit 1 if any input failed")
    test.set_defaults(handler=cmd_templates_test)

    rules = commands.add_parser("rules", help="test a business rule").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    rtest = rules.add_parser("test", help="test mode: trace a business rule over events")
    rtest.add_argument("business_rule_id", help="the BusinessRule's id")
    rtest.add_argument("--config", required=True, help="folder (or file) of entities")
    rtest.add_argument("--events", required=True, help="JSON lines of Standard Events")
    rtest.add_argument("--state", help="JSON object of initial state keys for the sandbox")
    rtest.add_argument("--pretty", action="store_true", help="indented JSON")
    rtest.set_defaults(handler=cmd_rules_test)

    demo = commands.add_parser("demo", help="sample tenant + simulated devices, end to end")
    demo.add_argument(
        "--local",
        action="store_true",
        help="one process, no Ray and no servers (the engine core only)",
    )
    demo.add_argument(
        "--events", type=positive_int, default=20_000, help="how many events to send (>= 1)"
    )
    demo.add_argument(
        "--rate", type=non_negative_float, default=0.0,
        help="events/s to post (0: as fast as possible)",
    )  # fmt: skip
    demo.add_argument(
        "--batch", type=positive_int, default=1000, help="--local: events per batch (>= 1)"
    )
    demo.add_argument("--config", help="--local: entities to use instead of the sample tenant")
    demo.add_argument("--data-dir", help="where the embedded stack keeps its files")
    demo.set_defaults(handler=cmd_demo)

    up = commands.add_parser("up", help="start the embedded stack (or attach to real servers)")
    up.add_argument("--ray-address", help="attach to an existing Ray cluster")
    up.add_argument("--config", help="entities to apply once up")
    up.add_argument("--data-dir", help=DATA_DIR_HELP)
    up.set_defaults(handler=_stack("cmd_up"))

    apply = commands.add_parser(
        "apply", help="validate and load entities (a running stack reloads)"
    )
    apply.add_argument("-f", "--file", action="append", required=True, help="file or folder")
    apply.add_argument("--data-dir", help=DATA_DIR_HELP)
    apply.add_argument(
        "--token",
        help="an API token (ert_..., default $EVENTRAY_API_TOKEN): apply through the running "
        "stack's management API with its role and scope; else the stack's admin token "
        "(default: $EVENTRAY_ADMIN_TOKEN, else <data-dir>/admin.token when readable); a "
        "command line is visible to every local user, the variable is not",
    )
    add_format_flag(apply)
    apply.set_defaults(handler=_stack("cmd_apply"))

    status = commands.add_parser(
        "status",
        help="stages, lanes, partitions, lag, events/s, errors: live on a terminal (Ctrl-C ends)",
    )
    status.add_argument("--data-dir", help=DATA_DIR_HELP)
    shape = status.add_mutually_exclusive_group()
    shape.add_argument(
        "--json", action="store_true", help="print one snapshot as JSON (for scripts)"
    )
    shape.add_argument(
        "--once", action="store_true", help="print one frame and exit (also when not a terminal)"
    )
    status.set_defaults(handler=_stack("cmd_status"))

    events = commands.add_parser("events", help="query stored events").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    query = events.add_parser("query", help="stored events, filtered by EVA fields")
    query.add_argument("--org", dest="org_id", help="default: every organization")
    query.add_argument("--children", dest="include_children", action="store_true",
                       help="with --org: its descendant organizations too")  # fmt: skip
    query.add_argument("--asset", dest="asset_id", help="only this asset's events")
    query.add_argument("--type", dest="event_type", help="only events of this eventType")
    query.add_argument("--tracker", dest="event_tracker_id", help="one event's eventTrackerId")
    query.add_argument(
        "--where",
        action="append",
        default=[],
        help="'field op value' on an EVA field by name or #id, op one of = != > >= < <= "
        "(repeatable, all must hold): --where 'temperature > -15' --where 'doorOpen = true'",
    )
    _add_page_arguments(query)
    query.set_defaults(handler=_stack("cmd_events_query"))
    story = events.add_parser("story", help="everything stored about one event, in order")
    story.add_argument("event_tracker_id", metavar="TRACKER_ID", help="the event's tracker id")
    story.add_argument("--pretty", action="store_true", help="indented JSON")
    story.add_argument("--data-dir", help=DATA_DIR_HELP)
    story.add_argument("--token", help=_API_TOKEN_HELP)
    story.set_defaults(handler=_stack("cmd_events_story"))

    logs = commands.add_parser("logs", help="query stored logs and the DLQ").add_subparsers(
        dest="action", required=True, metavar="KIND"
    )
    for kind, what in LOG_KINDS.items():
        _add_log_parser(logs.add_parser(kind, help=what))

    from eventray.cluster.replay_args import add_replay_commands

    add_replay_commands(commands)  # dlq list, dlq redrive, replay

    from eventray.cluster.manage_cli import add_commands  # get, delete, history, tokens

    add_commands(commands)

    from eventray.cluster.secrets_cli import add_secrets_commands  # secrets set|list|delete|...

    add_secrets_commands(commands)

    validate = commands.add_parser("validate", help="check entity files and folders")
    validate.add_argument("paths", nargs="+", help="YAML/JSON files or folders of entities")
    add_format_flag(validate)
    validate.set_defaults(handler=cmd_validate)
    return parser


def _log_as_driver() -> None:
    """The driver logs as the actors do (``log`` settings, JSON on stderr by default; the
    command's own output stays on stdout). Settings that do not load are reported by the
    command that needs them; logging then keeps the defaults."""
    from eventray.config.logs import configure_logging
    from eventray.config.settings import load_settings

    try:
        log = load_settings().log
    except EventrayError:
        configure_logging(component="driver")
        return
    configure_logging(component="driver", fmt=log.format, level=log.level)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point of the ``eventray`` command. An error prints one clear message and exits
    with the code :mod:`eventray.cluster.exit_codes` decides (argparse's usage errors exit 2
    by raising ``SystemExit`` itself)."""
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    _log_as_driver()
    try:
        return int(args.handler(args, stream))
    except KeyboardInterrupt as exc:  # Ctrl-C: what ran was stopped; no traceback
        print(f"eventray: {exc or 'interrupted'}", file=sys.stderr)
        return exit_code(exc)
    except EventrayError as exc:
        print(f"eventray: {exc}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"eventray: {where}{exc.strerror or exc}", file=sys.stderr)
        return exit_code(exc)
    except UnicodeDecodeError as exc:
        print(f"eventray: not UTF-8 text: {exc}", file=sys.stderr)
        return exit_code(exc)
    except Exception as exc:  # a Ray error or a bug: the traceback helps, the code says "run"
        traceback.print_exc()
        print(f"eventray: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    raise SystemExit(main())
