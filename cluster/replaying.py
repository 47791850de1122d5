"""The replay service wired to a running stack, and the ``eventray dlq`` / ``eventray replay``
commands.

:func:`stack_replay_service` builds a :class:`~eventray.pipeline.replay.ReplayService` over the
stack's stream (JetStream, with the admin's NATS credentials: it publishes into partitions),
its store actor (reads through its ``select``, records through its client) and its config
store. An API route in a process attached to the stack's Ray namespace can use it as is and
call the service with its caller's :class:`~eventray.pipeline.replay.Scope`; the CLI runs with
the stack's admin token, whose scope is every organization.

The partition count is read from the stream (the lanes' durable consumers), not from this
process's settings: a copy sent to another partition than its organization's would break the
single-writer rule of its rule state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from eventray.cluster.exit_codes import RUNTIME_FAILURE
from eventray.cluster.wiring import Wiring
from eventray.config.settings import Settings
from eventray.pipeline.adapters.nats_archive import JetStreamArchive
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.catalog import Catalog, catalog_from_store
from eventray.pipeline.errors import InvalidInput, Unavailable
from eventray.pipeline.replay import (
    RedriveReport,
    RedriveRequest,
    ReplayReport,
    ReplayRequest,
    ReplayService,
    Scope,
)
from eventray.pipeline.replay.outputs import (
    dead_letter_out,
    redrive_item_out,
    redrive_summary,
    replay_summary,
)
from eventray.pipeline.storage.dead_letters import SqlDeadLetters

__all__ = [
    "cmd_dlq_list",
    "cmd_dlq_redrive",
    "cmd_replay",
    "stack_partitions",
    "stack_replay_service",
]

_LANE_CONSUMER = re.compile(r"lane-p(\d+)")


async def stack_partitions(bus: JetStreamBus, default: int) -> int:
    """How many partitions the running stack has: one more than the highest partition with a
    lane's durable consumer; ``default`` when none has one yet."""
    try:
        consumers = await bus.js.consumers_info(bus.stream)
    except Exception:  # an older server, or no stream yet: the settings' count
        return default
    found = [
        int(m.group(1))
        for c in consumers
        if c.name and (m := _LANE_CONSUMER.fullmatch(c.name)) is not None
    ]
    return max(found) + 1 if found else default


@contextlib.asynccontextmanager
async def stack_replay_service(
    wiring: Wiring, *, store: str = "store"
) -> AsyncIterator[ReplayService]:
    """A :class:`ReplayService` over the running stack ``wiring`` describes (with the admin's
    endpoints), in a process attached to the stack's Ray namespace (the store actor
    ``store`` is found by name)."""
    import ray

    from eventray.actors.store import StoreClient

    settings = wiring.settings
    config = wiring.config_store()
    bus = wiring.stream()
    try:
        await bus.connect()
        handle = ray.get_actor(store)

        async def select(sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = await handle.select.remote(sql, dict(parameters))
            return rows

        def catalog() -> Catalog:
            return catalog_from_store(config)[0]

        yield ReplayService(
            catalog=catalog,
            archive=JetStreamArchive(bus),
            store=SqlDeadLetters(
                select=select,
                sink=StoreClient(store),
                retention=settings.store.retention(),
                database=settings.store.database,
            ),
            partitions=await stack_partitions(bus, settings.pipeline.partitions),
            subject_prefix=settings.nats.subject_prefix,
            trigger_subject=settings.nats.trigger_subject,
        )
    finally:
        await bus.close()
        config.close()


# ------------------------------------------------------------------ the commands


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"not an ISO-8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _emit(out: TextIO, value: Any) -> None:
    out.write(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    out.flush()


def _authorized(args: argparse.Namespace) -> Settings:
    """The settings, once the caller showed the stack's admin token (as ``apply`` asks)."""
    from eventray.cluster.admin_token import TOKEN_VARIABLE, check_admin_token
    from eventray.cluster.stack_cli import _settings

    settings = _settings(args)
    presented = args.token if args.token is not None else os.environ.get(TOKEN_VARIABLE)
    check_admin_token(settings.data_dir, presented)
    return settings


def _run(settings: Settings, work: Any) -> Any:
    """Attach to the stack's Ray, run ``work(service)`` on a fresh event loop, detach."""
    from eventray.cluster.stack import read_stack_info
    from eventray.cluster.stack_cli import _attach

    info = read_stack_info(settings.data_dir)
    if info is None:
        raise Unavailable(
            f"no running stack found in {settings.data_dir} (start one with eventray up)"
        )
    wiring = Wiring(settings, info.endpoints_obj())
    ray = _attach(settings)

    async def main() -> Any:
        async with stack_replay_service(wiring) as service:
            return await work(service)

    try:
        return asyncio.run(main())
    finally:
        ray.shutdown()


def _redrive_request(args: argparse.Namespace) -> RedriveRequest:
    sources = {"dlq": ("dlq",), "raw": ("events_raw",), "all": ("dlq", "events_raw")}
    return RedriveRequest(
        event_tracker_id=args.tracker,
        stage=args.stage,
        org_id=args.org_id,
        since_ms=_ms(args.since),
        until_ms=_ms(args.until),
        asset_id=args.asset_id,
        sources=sources[args.source],  # type: ignore[arg-type]
        everything=getattr(args, "everything", False),
        limit=args.limit,
    )


def cmd_dlq_list(args: argparse.Namespace, out: TextIO) -> int:
    """Print DLQ entries and ingress refusals at ``bind`` with their redrive records."""
    from eventray.cluster.data_cli import api_dlq_list

    through_api = api_dlq_list(args, out)  # an API token: the stack's API, with its scope
    if through_api is not None:
        return through_api
    settings = _authorized(args)
    request = _redrive_request(args)
    if not request.filtered:
        request = RedriveRequest(sources=request.sources, everything=True)
    redriven = {"yes": True, "no": False, "all": None}[args.redriven]

    async def work(service: ReplayService) -> None:
        entries = await service.dead_letters(
            Scope.everything(), request, redriven=redriven, limit=args.limit or 100
        )
        for entry in entries:
            _emit(out, dead_letter_out(entry))

    _run(settings, work)
    return 0


def cmd_dlq_redrive(args: argparse.Namespace, out: TextIO) -> int:
    """Redrive DLQ entries (and ingress refusals at ``bind``), or show what would be."""
    from eventray.cluster.data_cli import api_dlq_redrive

    through_api = api_dlq_redrive(args, out)  # an API token: the stack's API, with its scope
    if through_api is not None:
        return through_api
    settings = _authorized(args)
    request = _redrive_request(args)

    async def work(service: ReplayService) -> tuple[RedriveReport, bool | None]:
        report = await service.redrive(
            Scope.everything(), request, dry_run=args.dry_run, requested_by=_who()
        )
        done = None
        if args.wait is not None and report.copies:
            done = await service.wait(report.copies, timeout_s=args.wait)
        return report, done

    report, done = _run(settings, work)
    for item in report.items:
        _emit(out, redrive_item_out(item))
    summary = redrive_summary(report, done)
    _emit(out, summary)
    return RUNTIME_FAILURE if report.count("failed") or done is False else 0  # not done in time


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    """Replay a range of the stream for an organization, or show what would be replayed."""
    from eventray.cluster.data_cli import api_replay

    through_api = api_replay(args, out)  # an API token: the stack's API, with its scope
    if through_api is not None:
        return through_api
    settings = _authorized(args)
    if args.since is None and args.from_seq is None:
        raise InvalidInput("give the range's start: --since ISO or --from-seq N")
    request = ReplayRequest(
        org_id=args.org_id,
        since_ms=_ms(args.since),
        until_ms=_ms(args.until),
        start_seq=args.from_seq,
        end_seq=args.to_seq,
        include_children=args.include_children,
        state=args.state,
        triggers=args.triggers,
    )

    async def work(service: ReplayService) -> tuple[ReplayReport, bool | None]:
        report = await service.replay(
            Scope.everything(), request, dry_run=args.dry_run, replay_id=args.replay_id
        )
        done = None
        if args.wait is not None and report.copies:
            done = await service.wait(report.copies, timeout_s=args.wait)
        return report, done

    report, done = _run(settings, work)
    summary = replay_summary(report, done)
    _emit(out, summary)
    return RUNTIME_FAILURE if done is False else 0  # not processed within --wait


def _who() -> str:
    import getpass

    with contextlib.suppress(Exception):
        return f"cli:{getpass.getuser()}"
    return "cli"
