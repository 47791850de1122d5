"""``eventray events query|story``, ``logs KIND``, ``dlq list|redrive`` and ``replay`` through
the running stack's management API, when an API token is given (``--token ert_...`` or
``EVENTRAY_API_TOKEN``), with the token's role and scope, as ``apply/get/delete/history`` do.
Each returns None when no API token was given: the command then takes its local path (the
stack's admin, the whole platform).

The output is the local path's: the API streams the rows in the format asked (``--all``
follows the cursor there, page by page) and answers redrives and replays with the same JSON
as the commands print.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any, TextIO

import orjson

from eventray.cluster.exit_codes import RUNTIME_FAILURE
from eventray.cluster.manage_cli import ApiClient, api_client

__all__ = ["api_dlq_list", "api_dlq_redrive", "api_events", "api_logs", "api_replay", "api_story"]


def _emit(out: TextIO, value: Any) -> None:
    out.write(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    out.flush()


def _pages(
    client: ApiClient, path: str, query: list[tuple[str, Any]], args: Any, out: TextIO
) -> int:
    query += [("limit", args.limit), ("cursor", args.cursor), ("format", args.format),
              ("all", True if args.follow else None)]  # fmt: skip
    next_cursor = None
    for chunk, headers in client.stream("GET", path, query):
        out.write(chunk.decode())
        next_cursor = headers.get("X-Next-Cursor") or headers.get("x-next-cursor")
    out.flush()
    if next_cursor and args.format == "csv":  # CSV has no place for the cursor
        print(f"eventray: more rows follow: --cursor {next_cursor} (or --all)", file=sys.stderr)
    return 0


def api_events(args: argparse.Namespace, out: TextIO) -> int | None:
    client = api_client(args)
    if client is None:
        return None
    query: list[tuple[str, Any]] = [
        ("orgId", args.org_id), ("includeChildren", args.include_children or None),
        ("assetId", args.asset_id), ("eventType", args.event_type),
        ("eventTrackerId", args.event_tracker_id), ("since", args.since), ("until", args.until),
        *(("where", w) for w in args.where),
    ]  # fmt: skip
    return _pages(client, "/events", query, args, out)


def api_logs(args: argparse.Namespace, out: TextIO) -> int | None:
    client = api_client(args)
    if client is None:
        return None
    query: list[tuple[str, Any]] = [
        ("orgId", args.org_id), ("includeChildren", args.include_children or None),
        ("assetId", args.asset_id), ("businessRuleId", args.business_rule_id),
        ("ruleId", args.rule_id), ("actionId", args.action_id), ("triggerId", args.trigger_id),
        ("dataSourceId", args.data_source_id), ("routeGroupId", args.route_group_id),
        ("stage", args.stage), ("success", args.success), ("matched", args.matched),
        ("errored", args.errored), ("since", args.since), ("until", args.until),
        ("eventTrackerId", args.event_tracker_id), *(("where", w) for w in args.where),
        ("newestFirst", args.newest_first or None),
    ]  # fmt: skip
    return _pages(client, f"/logs/{args.action}", query, args, out)


def api_story(args: argparse.Namespace, out: TextIO) -> int | None:
    client = api_client(args)
    if client is None:
        return None
    tracker = urllib.parse.quote(args.event_tracker_id, safe="")
    story = client.call("GET", f"/events/{tracker}/story")
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if args.pretty else 0)
    out.write(orjson.dumps(story, option=option).decode() + "\n")
    return 0


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    return {"eventTrackerId": args.tracker, "stage": args.stage, "orgId": args.org_id,
            "assetId": args.asset_id, "since": args.since, "until": args.until,
            "source": args.source}  # fmt: skip


def api_dlq_list(args: argparse.Namespace, out: TextIO) -> int | None:
    client = api_client(args)
    if client is None:
        return None
    query = {**_selection(args), "redriven": args.redriven, "limit": args.limit}
    for entry in client.call("GET", "/dlq", **query)["items"]:
        _emit(out, entry)
    return 0


def api_dlq_redrive(args: argparse.Namespace, out: TextIO) -> int | None:
    client = api_client(args)
    if client is None:
        return None
    body = {k: v for k, v in _selection(args).items() if v is not None}
    body.update({"all": True} if getattr(args, "everything", False) else {})
    if args.limit is not None:
        body["limit"] = args.limit
    path = "/dlq/redrive?" + urllib.parse.urlencode(
        {k: v for k, v in (("dryRun", "true" if args.dry_run else None), ("wait", args.wait))
         if v is not None})  # fmt: skip
    answer = client.call("POST", path.rstrip("?"), body)
    for item in answer["items"]:
        _emit(out, item)
    summary = answer["summary"]
    _emit(out, summary)
    return RUNTIME_FAILURE if summary["failed"] or summary.get("processed") is False else 0


def api_replay(args: argparse.Namespace, out: TextIO) -> int | None:
    client = api_client(args)
    if client is None:
        return None
    body = {"orgId": args.org_id, "includeChildren": args.include_children, "since": args.since,
            "until": args.until, "fromSeq": args.from_seq, "toSeq": args.to_seq,
            "state": args.state, "triggers": args.triggers, "id": args.replay_id}  # fmt: skip
    path = "/replays?" + urllib.parse.urlencode(
        {k: v for k, v in (("dryRun", "true" if args.dry_run else None), ("wait", args.wait))
         if v is not None})  # fmt: skip
    summary = client.call(
        "POST", path.rstrip("?"), {k: v for k, v in body.items() if v is not None}
    )
    _emit(out, summary)
    return RUNTIME_FAILURE if summary.get("processed") is False else 0
