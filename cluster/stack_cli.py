"""CLI commands that run or talk to the stack: up, apply, status, events query, demo."""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from eventray.cluster.demo import SAMPLE_TENANT
from eventray.cluster.progress import Progress
from eventray.cluster.table import wants_table, write_table
from eventray.config.settings import Settings, load_settings
from eventray.pipeline.errors import ConfigError, ConfigIssue, InvalidInput, Unavailable
from eventray.pipeline.loader import entity_from_dict, read_documents

if TYPE_CHECKING:
    from eventray.cluster.stack import Stack

__all__ = [
    "cmd_apply",
    "cmd_demo_stack",
    "cmd_events_query",
    "cmd_events_story",
    "cmd_logs",
    "cmd_status",
    "cmd_up",
    "read_entity_documents",
]

_log = logging.getLogger(__name__)


def read_entity_documents(paths: list[Path]) -> list[dict[str, Any]]:
    """Documents from files, validated one by one (scripts given as ``{file:}`` inlined)."""
    issues: list[ConfigIssue] = []
    docs = read_documents(paths, issues)
    for source, doc in docs:
        entity_from_dict(source, doc, issues)
    if issues:
        raise ConfigError(issues)
    return [doc for _, doc in docs]


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "ray_address", None):
        overrides["ray"] = {"address": args.ray_address}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return load_settings(**overrides)


def _status_line(status: dict[str, Any], started: float) -> str:
    events = sum(lane["events"] for lane in status["lanes"])
    failed = sum(lane["failed"] for lane in status["lanes"])
    lag = sum(sum(lane["lag"].values()) for lane in status["lanes"])
    p99 = max((lane["latency_p99_ms"] for lane in status["lanes"]), default=0.0)
    elapsed = time.monotonic() - started
    line = (
        f"[{elapsed:6.1f}s] processed {events:>8} ({events / max(elapsed, 1e-9):>8,.0f}/s)  "
        f"dlq {failed:>5}  lag {lag:>6}  p99 {p99:>7.1f} ms  "
        f"triggers ok {status['triggers']['delivered']} failed {status['triggers']['failed']}"
    )
    if status.get("unanswered"):
        line += f"\n  NOT ANSWERING (stuck or restarting): {', '.join(status['unanswered'])}"
    ingress = status.get("ingress", {})
    if ingress.get("stream_drops"):
        line += (
            f"\n  EVENTS LOST: the stream dropped events no lane had taken (last: "
            f"{ingress.get('last_drop')}); raise EVENTRAY_NATS__MAX_BYTES or __MAX_AGE_S"
        )
    return line


def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    from eventray.cluster.stack import Stack

    stack = Stack(_settings(args))
    with _own_signal_handlers():
        _start_or_stop(stack, args)
        stopping = _stop_requested()
        try:
            _serve(stack, out, stopping)
        finally:
            out.write(
                "draining in-flight batches and stopping (at most "
                f"{stack.settings.pipeline.stop_timeout_s:g} s for the lanes)...\n"
            )
            out.flush()
            for line in stack.stop().lines():
                out.write(line + "\n")
            out.flush()
    return 0


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """The caller's Ctrl-C and SIGTERM handlers come back afterwards (``up`` may run
    in-process, e.g. in a test)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _start_or_stop(stack: Stack, args: argparse.Namespace) -> None:
    """Start the stack; on Ctrl-C (or SIGTERM) or a failure, stop what was started so far.

    Raises:
        KeyboardInterrupt: interrupted while starting (the CLI exits with one line).
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        stack.start()
        if args.config:
            revision = stack.apply(read_entity_documents([Path(args.config)]))
            # "up" is printed once the ingress and the lanes run this configuration: a device
            # posting right after must not be told its data source is unknown.
            if not stack.wait_revision(revision, timeout_s=60):
                _log.warning("the actors did not load configuration revision %d in 60 s", revision)
    except BaseException as exc:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup
            signal.signal(sig, signal.SIG_IGN)
        stack.stop(drain=False)
        if isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(
                "interrupted while starting; stopped what had started"
            ) from None
        raise


def _stop_requested() -> list[bool]:
    """Once up, Ctrl-C and SIGTERM ask for a drained stop: the flag is checked between rounds,
    so no batch is cut in the middle of a Ray call."""
    stopping: list[bool] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stopping


def _serve(stack: Stack, out: TextIO, stopping: list[bool]) -> None:
    out.write(
        f"eventray is up: ingress {stack.ingress_url}/api/v1/events?ds=...  "
        f"metrics {stack.metrics_url or 'off'}  "
        f"mqtt {stack.mqtt_url + '/eventray/mqtt/<ds>/<assetUUID>/up' if stack.mqtt_url else 'off'}"
        f"  api {stack.api_url + '/docs' if stack.api_url else 'off'}"
        f"  ray dashboard {stack.dashboard_url or 'off'}"
        "  (Ctrl-C drains and stops)\n"
    )
    if stack.api_url:
        out.write(f"console {stack.api_url}/console/ (sign in with an API token: eventray "
                  "tokens create)\n")  # fmt: skip
    out.flush()
    started = time.monotonic()
    last = 0.0
    while not stopping:
        time.sleep(0.5)
        if time.monotonic() - last >= 5:
            stack.supervise()
            out.write(_status_or_why_not(stack, started) + "\n")
            out.flush()
            last = time.monotonic()


def _status_or_why_not(stack: Stack, started: float) -> str:
    try:
        return _status_line(stack.status(), started)
    except Exception as exc:  # an actor restarting: the next round supervises it; `up` runs on
        lines = str(exc).strip().splitlines()
        return f"status unavailable: {lines[0] if lines else type(exc).__name__}"


def cmd_apply(args: argparse.Namespace, out: TextIO) -> int:
    """Store entities and tell a running stack; only with the data directory's admin token
    (``--token``, else ``EVENTRAY_ADMIN_TOKEN``, else the token file when the caller can read
    it; see :mod:`eventray.cluster.admin_token` for what that does and does not protect)."""
    import os

    from eventray.cluster.admin_token import TOKEN_VARIABLE, check_admin_token
    from eventray.cluster.manage_cli import api_apply, api_token
    from eventray.cluster.stack import apply_documents, read_stack_info
    from eventray.cluster.wiring import Endpoints, Wiring

    settings = _settings(args)
    if api_token(args) is not None:  # through the running stack's API, with the token's scope
        api_apply(args, read_entity_documents([Path(p) for p in args.file]), out)
        return 0
    # First: a wrong token must learn nothing, not even whether the documents would validate
    # against what is stored.
    presented = args.token if args.token is not None else os.environ.get(TOKEN_VARIABLE)
    check_admin_token(settings.data_dir, presented)
    documents = read_entity_documents([Path(p) for p in args.file])
    info = read_stack_info(settings.data_dir)
    if info is not None:
        endpoints = info.endpoints_obj()
    else:
        endpoints = Endpoints(
            "", "", None, None, settings.data_dir / "config", settings.mongodb_url, None
        )
    revision = apply_documents(Wiring(settings, endpoints), documents, notify=info is not None)
    if wants_table(args.output_format, out):
        kinds = Counter(str(doc.get("kind")) for doc in documents)
        write_table(out, ("kind", "applied"), sorted(kinds.items()))
        out.write(f"store revision {revision}; running stack "
                  f"{'notified' if info is not None else 'not running'}\n")  # fmt: skip
        return 0
    out.write(
        orjson.dumps(
            {
                "applied": len(documents),
                "revision": revision,
                "runningStackNotified": info is not None,
            }
        ).decode()
        + "\n"
    )
    return 0


def _attach(settings: Settings) -> Any:
    import ray

    from eventray.cluster.raylocal import keep_ray_on_loopback, use_saved_ray_token
    from eventray.cluster.stack import read_stack_info

    info = read_stack_info(settings.data_dir)
    if info is None:
        raise Unavailable(
            f"no running stack found in {settings.data_dir} (start one with eventray up)"
        )
    keep_ray_on_loopback()
    use_saved_ray_token()
    # The namespace the stack recorded, not this command's setting: the file names the stack.
    try:
        ray.init(address=info.ray_address, namespace=info.namespace, log_to_driver=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError...: all mean "not up"
        lines = str(exc).strip().splitlines()
        raise Unavailable(
            f"the stack's Ray at {info.ray_address} does not answer: "
            f"{lines[0] if lines else type(exc).__name__}"
        ) from exc
    return ray


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """The running stack's lanes, partitions, lag, rates and errors: a live view on a terminal
    (every second until Ctrl-C), one frame with ``--once`` or when not on a terminal, the
    snapshot as JSON with ``--json``. Every actor gets ``metrics.actor_timeout_s`` to answer;
    one that does not is reported as stuck."""
    from eventray.cluster.status_gather import gather_status
    from eventray.cluster.status_view import print_once, watch

    settings = _settings(args)
    ray = _attach(settings)

    def actor(name: str) -> Any | None:
        try:
            return ray.get_actor(name)
        except ValueError:  # not running (yet, or any more): reported as not answering
            return None

    def snapshot() -> dict[str, Any]:
        names = sorted(ray.util.list_named_actors(all_namespaces=False))
        lanes = {n: ray.get_actor(n) for n in names if n.startswith("lane-")}
        return gather_status(
            lanes, actor("ingress"), actor("store"), timeout_s=settings.metrics.actor_timeout_s
        )

    try:
        if args.json:
            out.write(
                orjson.dumps(
                    snapshot(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                ).decode()
                + "\n"
            )
        elif args.once or not out.isatty():
            print_once(snapshot, out)
        else:
            watch(snapshot, out)
    finally:
        ray.shutdown()
    return 0


def _catalog(settings: Settings) -> Any:
    """The running stack's catalog, read from its config store."""
    from eventray.cluster.stack import read_stack_info
    from eventray.cluster.wiring import Wiring
    from eventray.pipeline.catalog import catalog_from_store

    info = read_stack_info(settings.data_dir)
    if info is None:
        raise Unavailable(
            f"no running stack found in {settings.data_dir} (start one with eventray up)"
        )
    config = Wiring(settings, info.endpoints_obj()).config_store()
    try:
        catalog, _ = catalog_from_store(config)
    finally:
        config.close()
    return catalog


def _write_pages(
    args: argparse.Namespace, out: TextIO, fetch: Any, columns: tuple[str, ...]
) -> None:
    """Pages from ``fetch(cursor)`` as ``--format``: one page, or every page with ``--all``."""
    import sys

    from eventray.pipeline.storage.export import export, follow

    last: list[str | None] = [None]

    def fetched(cursor: str | None) -> Any:
        page = fetch(cursor)
        last[0] = page.next_cursor
        return page

    pages = follow(fetched, cursor=args.cursor, max_pages=None if args.follow else 1)
    for chunk in export(pages, args.format, columns=columns):
        out.write(chunk.decode())
    out.flush()
    if last[0] is not None and args.format == "csv":  # CSV has no place for the cursor
        print(f"eventray: more rows follow: --cursor {last[0]} (or --all)", file=sys.stderr)


def cmd_events_query(args: argparse.Namespace, out: TextIO) -> int:
    """Stored events, filtered (``--where 'temperature > -15'``, repeatable), as JSON lines,
    JSON or CSV. The CLI is the local administrator: its scope is the whole platform."""

    from eventray.cluster.data_cli import api_events
    from eventray.pipeline.storage.reading import plan_event_query
    from eventray.pipeline.storage.schema import columns_of
    from eventray.pipeline.storage.scope import Scope

    through_api = api_events(args, out)  # an API token: the stack's API, with its scope
    if through_api is not None:
        return through_api
    settings = _settings(args)
    query = plan_event_query(
        _catalog(settings),
        Scope.platform(),
        org_id=args.org_id,
        include_children=args.include_children,
        asset_id=args.asset_id,
        event_type=args.event_type,
        event_tracker_id=args.event_tracker_id,
        since=_when(args.since),
        until=_when(args.until),
        where=args.where,
        limit=args.limit,
        cursor=args.cursor,
    )
    _write_store_pages(args, out, settings, "query_events", query, columns_of("events"))
    return 0


def _write_store_pages(
    args: argparse.Namespace, out: TextIO, settings: Settings, method: str, query: Any,
    columns: Any,
) -> None:  # fmt: skip
    """Write the pages the store actor's ``method`` answers for ``query``, each asked with the
    previous page's cursor (``events query`` and ``logs`` differ only in method and columns)."""
    import dataclasses

    ray = _attach(settings)
    try:
        call = getattr(ray.get_actor("store"), method)
        _write_pages(
            args,
            out,
            lambda cursor: ray.get(call.remote(dataclasses.replace(query, cursor=cursor))),
            columns,
        )
    finally:
        ray.shutdown()


def cmd_logs(args: argparse.Namespace, out: TextIO) -> int:
    """Rows of one log table or the DLQ (``eventray logs rules|captures|triggers|raw|dlq|
    scripts|routers``), filtered, as JSON lines, JSON or CSV; scope: the whole platform."""

    from eventray.cluster.data_cli import api_logs
    from eventray.pipeline.storage.logs import LOG_KINDS, log_columns
    from eventray.pipeline.storage.reading import plan_log_query
    from eventray.pipeline.storage.scope import Scope

    through_api = api_logs(args, out)  # an API token: the stack's API, with its scope
    if through_api is not None:
        return through_api
    settings = _settings(args)
    query = plan_log_query(
        _catalog(settings),
        Scope.platform(),
        args.action,
        org_id=args.org_id,
        include_children=args.include_children,
        asset_id=args.asset_id,
        business_rule_id=args.business_rule_id,
        rule_id=args.rule_id,
        action_id=args.action_id,
        trigger_id=args.trigger_id,
        data_source_id=args.data_source_id,
        route_group_id=args.route_group_id,
        stage=args.stage,
        success=args.success,
        matched=args.matched,
        errored=args.errored,
        since=_when(args.since),
        until=_when(args.until),
        event_tracker_id=args.event_tracker_id,
        where=args.where,
        limit=args.limit,
        cursor=args.cursor,
        newest_first=args.newest_first,
    )
    columns = log_columns(LOG_KINDS[args.action])
    _write_store_pages(args, out, settings, "query_logs", query, columns)
    return 0


def cmd_events_story(args: argparse.Namespace, out: TextIO) -> int:
    """Everything stored about one event, in order, as one JSON document."""
    from eventray.cluster.data_cli import api_story
    from eventray.pipeline.storage.scope import Scope

    through_api = api_story(args, out)  # an API token: the stack's API, with its scope
    if through_api is not None:
        return through_api
    settings = _settings(args)
    ray = _attach(settings)
    try:
        story = ray.get(
            ray.get_actor("store").event_story.remote(Scope.platform(), args.event_tracker_id)
        )
    finally:
        ray.shutdown()
    if story is None:
        raise InvalidInput(f"nothing stored for event tracker id {args.event_tracker_id!r}")
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if args.pretty else 0)
    out.write(orjson.dumps(story.to_dict(), default=str, option=option).decode() + "\n")
    return 0


def _when(text: str | None) -> Any:
    from datetime import UTC, datetime

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"not an ISO-8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sample_documents(sink_url: str | None, smtp_port: int | None = None) -> list[dict[str, Any]]:
    """The sample tenant, with webhook triggers pointed at ``sink_url`` and email triggers at
    the SMTP server on 127.0.0.1:``smtp_port``, when given."""
    documents = read_entity_documents([SAMPLE_TENANT])
    out = []
    for doc in documents:
        if doc.get("kind") == "Trigger":
            raw = orjson.dumps(doc)
            if sink_url is not None:
                raw = raw.replace(b"http://127.0.0.1:8089", sink_url.encode())
            doc = orjson.loads(raw)
            email = doc.get("config", {}).get("email")
            if smtp_port is not None and email is not None:
                email["smtpPort"] = smtp_port
        out.append(copy.deepcopy(doc))
    return out


def sample_secrets(documents: list[dict[str, Any]], value: str) -> dict[str, dict[str, object]]:
    """A secrets table giving ``OPS_TOKEN`` to every organization owning a trigger that
    renders it (the sample's ops webhook, and its copies in the bench's tenants)."""
    return {
        str(doc["orgId"]): {"OPS_TOKEN": value}
        for doc in documents
        if doc.get("kind") == "Trigger" and b"secrets.OPS_TOKEN" in orjson.dumps(doc)
    }


SUMMARY_QUERIES = {
    "events per organization and type": (
        "SELECT org_id, event_type, count() AS n FROM {db}.events FINAL "
        "GROUP BY org_id, event_type ORDER BY org_id, event_type"
    ),
    "business rules that ran actions": (
        "SELECT business_rule_id, count() AS n FROM {db}.logs_rule FINAL "
        "WHERE notEmpty(actions) GROUP BY business_rule_id ORDER BY n DESC"
    ),
    "trigger deliveries": (
        "SELECT trigger_id, success, count() AS n FROM {db}.logs_trigger FINAL "
        "GROUP BY trigger_id, success ORDER BY trigger_id, success"
    ),
    "DLQ by stage": (
        "SELECT stage, any(error) AS example, count() AS n FROM {db}.dlq FINAL "
        "GROUP BY stage ORDER BY n DESC"
    ),
}


def _free_ports_unless_set(settings: Settings) -> Settings:
    """The demo is a one-off: it listens on ports the OS picks, so a service already on the
    default ports (8088, 9464, 1883, 8089) cannot stop it; ports the user set are kept."""
    changes: dict[str, Any] = {}
    for name in ("ingress", "metrics", "mqtt", "api"):
        section = getattr(settings, name)
        if "port" not in section.model_fields_set:
            changes[name] = section.model_copy(update={"port": 0})
    ray = settings.ray
    # The dashboard keeps Ray's usual 8265 when it is free (the URL people know), else any.
    if "dashboard_port" not in ray.model_fields_set and not _port_free(ray.dashboard_port):
        changes["ray"] = ray.model_copy(update={"dashboard_port": 0})
    return settings.model_copy(update=changes)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


DEMO_SINKS_NETWORK = "127.0.0.1/32"
"""Where the demo's webhook and SMTP sinks listen."""


def _allow_demo_sinks(settings: Settings) -> Settings:
    """Deliveries may not reach loopback by default (see ``triggers.allow_networks``), and the
    demo's sinks listen there: the demo allows that one network, on top of what the user
    allowed, through the same setting a user would change."""
    triggers = settings.triggers
    if DEMO_SINKS_NETWORK in triggers.allow_networks:
        return settings
    allowed = (*triggers.allow_networks, DEMO_SINKS_NETWORK)
    return settings.model_copy(
        update={"triggers": triggers.model_copy(update={"allow_networks": allowed})}
    )


class _MqttDevice(threading.Thread):
    """One of the sample's MQTT assets publishing its readings beside the HTTP traffic."""

    def __init__(self, url: str, asset: Any, count: int) -> None:
        super().__init__(name=f"mqtt-{asset.id}", daemon=True)
        self.url, self.asset, self.count = url, asset, count
        self.report: Any = None

    def run(self) -> None:
        from eventray.pipeline.mqtt import uplink_topic
        from eventray.testing.mqtt_device import publish_uplinks

        credentials = self.asset.protocol.mqtt
        payloads = (
            orjson.dumps(
                {
                    "deviceId": self.asset.asset_uuid,
                    "door": "closed",
                    "batt": 88,
                    "ts": f"2026-03-01T07:{n // 4 % 60:02d}:{n % 4 * 15:02d}Z",
                    "readings": {"t": round(-19 + math.sin(n / 7) / 2, 1), "rh": 55},
                }
            )
            for n in range(self.count)
        )
        self.report = publish_uplinks(
            self.url, credentials.username, credentials.password,
            uplink_topic("ds-mqtt", self.asset.asset_uuid), payloads,
        )  # fmt: skip

    def summary(self) -> str:
        r = self.report
        if r is None:
            return f"mqtt device {self.asset.id}: did not finish"
        if r.refused:
            return f"mqtt device {self.asset.id}: login refused ({r.refused})"
        return (f"mqtt device {self.asset.id} on {self.url}: {r.sent} uplinks published (QoS 1), "
                f"{r.acknowledged} acknowledged by the broker (stored)")  # fmt: skip


def _mqtt_devices(stack: Any, catalog: Any, count: int) -> list[_MqttDevice]:
    """The sample's MQTT assets (those ds-mqtt takes), each publishing ``count`` uplinks."""
    if not stack.mqtt_url or "ds-mqtt" not in catalog.data_sources:
        return []
    devices = [
        _MqttDevice(stack.mqtt_url, asset, count)
        for asset in catalog.assets.values()
        if asset.enabled and asset.protocol is not None and asset.protocol.mqtt is not None
    ]
    for device in devices:
        device.start()
    return devices


def cmd_demo_stack(args: argparse.Namespace, out: TextIO) -> int:
    import ray

    from eventray.cluster.stack import Stack
    from eventray.pipeline.adapters.secrets_file import write_secrets_file
    from eventray.pipeline.catalog import load_catalog
    from eventray.testing.mail_sink import MailSink
    from eventray.testing.sink import WebhookSink
    from eventray.testing.traffic import TrafficResult, post_traffic

    settings = _allow_demo_sinks(_free_ports_unless_set(_settings(args)))
    with WebhookSink() as sink, MailSink() as mail:
        # The sample's ops webhook sends "Authorization: Bearer {{secrets.OPS_TOKEN}}" with
        # acme-foods' secret: give it one, unless the operator keeps a secrets file already.
        if not settings.secrets_path.exists():
            table = sample_secrets(sample_documents(sink.url), "demo-token")
            write_secrets_file(settings.secrets_path, table)
            out.write(f"wrote the sample's secrets to {settings.secrets_path} (mode 0600)\n")
        stack = Stack(settings)
        try:
            out.write(
                f"triggers.allow_networks = {list(settings.triggers.allow_networks)}: the demo's "
                "sinks listen on loopback, which deliveries may not reach by default\n"
                "starting the embedded stack (NATS, Valkey, chDB, Ray)...\n"
            )
            out.flush()
            stack.start()
            # The ingress must know the sample's data sources before traffic comes (it answers
            # 404 for one it does not know); a lane that is behind catches up by itself.
            stack.wait_revision(stack.apply(sample_documents(sink.url, mail.port)))
            catalog = load_catalog([SAMPLE_TENANT], compile_scripts=False)
            started = time.monotonic()
            if stack.api_url:
                out.write(f"console {stack.api_url}/console/ (sign in with an API token: "
                          "eventray tokens create)\n")  # fmt: skip
            out.write(
                f"ray dashboard {stack.dashboard_url or 'off'} (actors, their logs, metrics)\n"
                f"ingress {stack.ingress_url}; posting {args.events} events"
                f"{f' at {args.rate:,.0f}/s' if args.rate else ''}...\n"
            )
            out.flush()

            shown = Progress(out, total=args.events)

            def progress(traffic: TrafficResult) -> None:
                stack.supervise()
                lanes = stack.status()["lanes"]
                shown.update(sent=traffic.sent, stored=sum(lane["events"] for lane in lanes),
                             failed=sum(lane["failed"] for lane in lanes))  # fmt: skip

            devices = _mqtt_devices(stack, catalog, max(1, args.events // 20))
            traffic = post_traffic(
                stack.ingress_url, catalog, events=args.events, rate=args.rate, progress=progress
            )
            for device in devices:
                device.join(60)
            stack.wait_idle(timeout_s=120)
            status = stack.status()
            shown.done(sent=traffic.sent, stored=sum(lane["events"] for lane in status["lanes"]),
                       failed=sum(lane["failed"] for lane in status["lanes"]))  # fmt: skip
            out.write(_status_line(status, started) + "\n")
            out.write(
                f"\ningress answers: {dict(traffic.answers)}; {traffic.sent} events posted in "
                f"{traffic.seconds:.1f} s\n"
            )
            for device in devices:
                out.write(device.summary() + "\n")
            if devices:
                bridge = status.get("ingress", {}).get("mqtt", {})
                out.write(f"the ingress's MQTT bridge: {bridge.get('accepted', 0)} uplinks into "
                          f"the stream, {bridge.get('refused', 0)} refused\n")  # fmt: skip
            database = settings.store.database
            store = stack.actors["store"]
            for title, sql in SUMMARY_QUERIES.items():
                rows = ray.get(store.select.remote(sql.format(db=database)))
                out.write(f"\n{title}:\n")
                headers = list(rows[0]) if rows else ["(none)"]
                write_table(out, headers, [list(row.values()) for row in rows], indent="  ")
            out.write(
                f"\nthe webhook sink received {len(sink.requests)} requests, "
                f"the SMTP sink {len(mail.mails)} emails\n"
            )
        finally:
            stack.stop()
    return 0
