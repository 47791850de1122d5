"""The HTTP ingress itself (CONTRACTS.md "HTTP ingestion") over aiohttp, without Ray.

:class:`IngressActor` hosts it in the cluster; tests run it directly against a real
nats-server. The decisions are :class:`pipeline.ingress.IngressPolicy`'s; this class parses
requests, publishes accepted events to JetStream and answers once the stream acknowledged them
(201), keeps refused authentications for ``events_raw``, and applies admission
(:mod:`pipeline.admission`): 429 with ``Retry-After`` when an organization is over its quota,
or when more than ``max_queue_s`` seconds of work wait in the stream (from ``shed_heavy_s``,
for the organizations sending more than their share); 503 with ``Retry-After`` when the stream does
not answer, or when an OAuth2 data source's key set cannot be fetched (the policy awaits the
key-set cache, which fetches without blocking this loop).

An event no asset takes (unknown, disabled, or outside the data source's organization) is
answered 422 with the reason and kept whole in ``events_raw`` (stage ``bind``), per item in a
batch. Input alone never makes a 500: a body that is not a JSON type is 415, an ambiguous request
(a query parameter or a credential header given twice) 400, a batch over ``max_batch_items``
413, an event nested deeper than the stages can re-encode 400, credentials that are not UTF-8
401. What still raises is a bug: it is answered 500 and logged as one line, at most once per
``_LOG_EVERY_S`` with a count, so a client cannot fill the log with tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from eventray.config.settings import IngressSettings
from eventray.pipeline.admission import Admission, Backlog, DrainMeter, quota_table
from eventray.pipeline.client_address import client_address, parse_networks
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.ingress import HEADER_ORG, HEADER_SOURCE, Accepted, IngressPolicy, Refused
from eventray.pipeline.models import DataSource
from eventray.pipeline.ports import OutboxMessage, Stream, StreamDrop, Uplink, UplinkSource
from eventray.pipeline.storage.rows import RowContext, refusal_row

__all__ = ["IngressApp", "KeepRows"]

_CHUNK = 1000  # events per append: bounds what one wait holds
_JSON_TYPES = frozenset({"application/json", "text/json"})
_LOG_EVERY_S = 10.0
_log = logging.getLogger(__name__)

KeepRows = Callable[[dict[str, list[tuple[Any, ...]]]], Awaitable[object]]
"""Where refused authentications go (a row sink's ``write``)."""


def _json(status: int, payload: Any, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


class IngressApp:
    """The HTTP server of the ingress.

    Args:
        stream: a connected stream (the app appends to it; it does not own the connection).
        policy: authentication and acceptance decisions (swap with :meth:`use` on reload).
        rows: how refused authentications become ``events_raw`` rows.
        settings: host, port, body limits, backpressure threshold.
        partitions: how many stream partitions to watch for lag.
        keep: stores refused authentications (its failures never delay an answer).
        lag_interval_s: how often the consumer lag is read.
    """

    def __init__(
        self,
        *,
        stream: Stream,
        policy: IngressPolicy,
        rows: RowContext,
        settings: IngressSettings,
        partitions: int,
        keep: KeepRows,
        lag_interval_s: float = 0.5,
        mqtt: bool = False,
    ) -> None:
        self.stream = stream
        self.settings = settings
        self.partitions = partitions
        self.keep = keep
        self.lag_interval_s = lag_interval_s
        self.lag = 0
        self.port = 0
        self.counts: dict[int, int] = {}
        self._policy = policy
        self._rows = rows
        self.admission = Admission(
            settings.max_queue_s,
            settings.shed_heavy_s,
            DrainMeter(prior_per_s=settings.drain_rate_prior),
        )
        self.admission.use_quotas(*quota_table(policy.catalog.orgs))
        self.shed: dict[str, int] = {"quota": 0, "queue": 0}
        self._runner: web.AppRunner | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._proxies = parse_networks(settings.trusted_proxies)
        self.refusals_not_kept = 0
        self._kept: dict[str, tuple[float, int]] = {}  # data source -> (minute start, kept)
        self.internal_errors = 0
        self.stream_drops: dict[int, int] = {}  # partition -> drops noticed
        self.last_drop = ""
        self._errors_logged_at = 0.0
        self._errors_unlogged = 0
        self.mqtt = mqtt
        self.uplinks: UplinkSource | None = None
        self.mqtt_counts: dict[str, int] = {"accepted": 0, "refused": 0, "retried": 0, "shed": 0}
        self._bridge_task: asyncio.Task[None] | None = None
        self.mqtt_waiting = ""  # why the bridge has no uplink source yet

    def use(self, policy: IngressPolicy, rows: RowContext) -> None:
        """Apply a new catalog (config change) to the next request."""
        self._policy, self._rows = policy, rows
        self.admission.use_quotas(*quota_table(policy.catalog.orgs))
        if policy.keys is not None:
            policy.keys.retain(policy.jwks_urls)

    async def start(self) -> int:
        """Listen; returns the port (``settings.port`` 0 picks a free one)."""
        limit = max(self.settings.max_body_bytes, self.settings.max_batch_bytes)
        app = web.Application(client_max_size=limit, middlewares=[self._no_tracebacks])
        app.router.add_post("/api/v1/events", self._single)
        app.router.add_post("/api/v1/events/batch", self._batch)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._lag_task = asyncio.create_task(self._watch_lag())
        if self.mqtt:
            self._bridge_task = asyncio.create_task(self._bridge())
        return self.port

    async def stop(self) -> None:
        self._stopping = True
        if self._lag_task is not None:
            # The flag, not only the cancellation, ends the watcher: on Python 3.11 a
            # cancellation that meets a NATS reply arriving at the same moment is swallowed by
            # ``asyncio.wait_for`` inside nats-py, and the loop would go on (a test hung on it).
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        if self._bridge_task is not None:
            self._bridge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._bridge_task
        if self.uplinks is not None:
            await self.uplinks.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _watch_lag(self) -> None:
        """Reads the lag for backpressure, and notices (the ingress is the one process always
        up while events come in) when the stream dropped events no lane had taken."""
        while not self._stopping:
            pending = acked = answered = 0
            for partition in range(self.partitions):
                with contextlib.suppress(RetryableError):
                    backlog = await self.stream.backlog(partition)
                    pending, acked, answered = (
                        pending + backlog.pending, acked + backlog.acked, answered + 1
                    )  # fmt: skip
                with contextlib.suppress(RetryableError):
                    drop = await self.stream.dropped(partition)
                    if drop is not None:
                        self._dropped(drop)
            self.lag = pending
            if answered == self.partitions:  # a partial sum would read as a jump in the rate
                self.admission.meter.update(time.monotonic(), Backlog(pending, acked))
            await asyncio.sleep(self.lag_interval_s)

    def _dropped(self, drop: StreamDrop) -> None:
        self.stream_drops[drop.partition] = self.stream_drops.get(drop.partition, 0) + 1
        self.last_drop = (
            f"partition p{drop.partition}: stream seq {drop.first_seq}-{drop.last_seq} "
            f"dropped before a lane took them"
        )
        _log.warning(
            "the stream dropped events of partition p%d before a lane took them (stream seq "
            "%d-%d): they are lost; more was waiting than nats.max_bytes holds, or for longer "
            "than nats.max_age_s (raise them, or add lanes)",
            drop.partition,
            drop.first_seq,
            drop.last_seq,
        )

    # ------------------------------------------------------------------ handlers
    @web.middleware
    async def _no_tracebacks(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: one line, rate-limited, never the client's input
            self._internal_error(f"internal error on {request.path}: {type(exc).__name__}: {exc}")
            return self._answer(_json(500, {"error": "internal error"}))

    def _internal_error(self, what: str) -> None:
        """Count it; log one line at most every ``_LOG_EVERY_S`` (with how many were not)."""
        self.internal_errors += 1
        now = time.monotonic()
        if now - self._errors_logged_at >= _LOG_EVERY_S:
            _log.error("ingress: %s (%d more since the last report)", what, self._errors_unlogged)
            self._errors_logged_at, self._errors_unlogged = now, 0
        else:
            self._errors_unlogged += 1

    async def _health(self, request: web.Request) -> web.Response:
        meter = self.admission.meter
        return _json(200, {"ok": True, "lag": self.lag, "queuedSeconds": round(meter.queued_s, 3),
                           "drainPerSecond": round(meter.drain_per_s)})  # fmt: skip

    async def _authenticated(
        self, request: web.Request, body: bytes, limit: int
    ) -> DataSource | web.Response:
        if len(body) > limit:
            return self._answer(_json(413, {"error": f"body too large (limit {limit} bytes)"}))
        problem = self._malformed(request)
        if problem is not None:
            return self._answer(_json(*problem))
        headers = {k.lower(): v for k, v in request.headers.items()}
        source = await self._policy.source(
            request.query.get("ds"),
            headers=headers,
            query=dict(request.query),
            client_ip=client_address(
                request.remote or "", request.headers.getall("X-Forwarded-For", ()), self._proxies
            ),
            body=body,
        )
        if isinstance(source, Refused):
            if source.keep:
                await self._keep(source)
            return self._answer(_json(source.status, {"error": source.error}, source.retry_after_s))
        refused = self.admission.check(source.org_id, time.monotonic())
        if refused is not None:
            self.shed["quota" if refused.error.startswith("quota") else "queue"] += 1
            return self._answer(
                _json(refused.status, {"error": refused.error}, refused.retry_after_s)
            )
        return source

    def _malformed(self, request: web.Request) -> tuple[int, dict[str, str]] | None:
        """400 for an ambiguous request, 415 for a body that is not JSON by its type."""
        query = request.query
        for key in set(query.keys()):
            if len(query.getall(key)) > 1:
                return 400, {"error": f"query parameter {key!r} given more than once"}
        for name in (*self._policy.credential_headers, "content-type"):
            if len(request.headers.getall(name, ())) > 1:
                return 400, {"error": f"header {name!r} given more than once"}
        if "Content-Type" in request.headers:
            kind = request.content_type
            json_type = kind in _JSON_TYPES or (
                kind.startswith("application/") and kind.endswith("+json")
            )
            if not json_type:
                return 415, {"error": f"content type {kind!r} is not JSON (application/json)"}
            charset = request.charset
            if charset is not None and charset.lower() not in ("utf-8", "utf8"):
                return 415, {"error": f"charset {charset!r} is not supported (utf-8)"}
        return None

    def _may_keep(self, data_source_id: str) -> bool:
        """A budget per data source and minute: refusals cost the store nothing past it."""
        budget = self.settings.refused_keep_per_minute
        now = time.monotonic()
        start, kept = self._kept.get(data_source_id, (now, 0))
        if now - start >= 60.0:
            start, kept = now, 0
        if kept >= budget:
            self.refusals_not_kept += 1
            return False
        self._kept[data_source_id] = (start, kept + 1)
        return True

    async def _keep(self, refused: Refused) -> None:
        if not self._may_keep(refused.data_source_id):
            return
        prefix = refused.body[: self.settings.refused_keep_bytes]
        reason = refused.error
        if len(prefix) < len(refused.body):
            reason += f" (body of {len(refused.body)} bytes; the first {len(prefix)} kept)"
        row = refusal_row(
            event_tracker_id=refused.event_tracker_id,
            org_id=refused.org_id,
            data_source_id=refused.data_source_id,
            body=prefix,
            reason=reason,
            at=datetime.now(UTC),
            context=self._rows,
        )
        with contextlib.suppress(Exception):  # the answer does not wait on the store being up
            await asyncio.wait_for(self.keep({"events_raw": [row]}), 5)

    async def _keep_unbound(self, refused: list[Refused]) -> None:
        """Events of an authenticated client that no asset takes (422): every one is kept
        whole, in one write per request, so it can be replayed once the asset exists."""
        kept = [r for r in refused if r.keep and r.stage == "bind"]
        if not kept:
            return
        at = datetime.now(UTC)
        rows = [
            refusal_row(event_tracker_id=r.event_tracker_id, org_id=r.org_id,
                        data_source_id=r.data_source_id, body=r.body, reason=r.error, at=at,
                        context=self._rows, stage=r.stage)
            for r in kept
        ]  # fmt: skip
        with contextlib.suppress(Exception):  # the answer does not wait on the store being up
            await asyncio.wait_for(self.keep({"events_raw": rows}), 5)

    def _answer(self, response: web.Response) -> web.Response:
        self.counts[response.status] = self.counts.get(response.status, 0) + 1
        return response

    async def _publish(self, accepted: list[Accepted]) -> list[tuple[int, dict[str, Any]]]:
        """Append accepted events to the stream, in chunks (one write and one wait each);
        per event the answer: 201 once stored, 503 when the stream did not answer."""
        out: list[tuple[int, dict[str, Any]]] = []
        for start in range(0, len(accepted), _CHUNK):
            chunk = accepted[start : start + _CHUNK]
            messages = [
                OutboxMessage(a.subject, a.body, a.event_tracker_id, a.headers) for a in chunk
            ]
            try:
                errors = await self.stream.append(messages, timeout_s=self.settings.ack_timeout_s)
            except RetryableError as exc:
                out += [(503, {"error": f"stream unavailable: {exc}"})] * len(chunk)
                continue
            for item, error in zip(chunk, errors, strict=True):
                if not error:
                    out.append((201, {"eventTrackerId": item.event_tracker_id}))
                elif error.startswith("refused"):
                    out.append((413, {"error": f"the stream refused the event: {error}"}))
                else:
                    out.append((503, {"error": f"stream unavailable: {error}"}))
        return out

    async def _bridge(self) -> None:
        """MQTT uplinks into the stream, as long as the ingress runs (see :meth:`bridge_once`);
        a broker without an MQTT store yet, or a failed round, is tried again a moment later."""
        while not self._stopping:
            if self.uplinks is None:
                try:
                    self.uplinks = await self.stream.uplinks()
                except RetryableError as exc:  # no MQTT store yet: not an error of ours
                    self.mqtt_waiting = str(exc)
                    await asyncio.sleep(2.0)
                    continue
                self.mqtt_waiting = ""
            try:
                await self.bridge_once(self.uplinks)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._internal_error(f"MQTT bridge: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def bridge_once(self, uplinks: UplinkSource, *, max_uplinks: int = 500) -> int:
        """One round of uplinks: decided as HTTP events are (the same policy, quotas and
        queue limit), published into the stream, refusals kept whole in ``events_raw``; only
        then settled (a QoS 1 uplink leaves the broker's store). One the stream did not take,
        or that admission holds back, comes again after a delay (QoS 0: dropped, counted).
        Returns how many uplinks it took."""
        batch = await uplinks.fetch(max_uplinks, timeout_s=1.0)
        if not batch:
            return 0
        now, policy = time.monotonic(), self._policy
        received = time.time_ns() // 1_000_000
        accepted: list[tuple[Uplink, Accepted]] = []
        refused: list[Refused] = []
        done: list[Uplink] = []
        held: list[Uplink] = []
        delay = 1.0
        for uplink in batch:
            decided = policy.uplink(uplink, received_ms=received)
            if isinstance(decided, Refused):
                refused.append(decided)
                done.append(uplink)
                continue
            decision = self.admission.check(decided.headers[HEADER_ORG], now)
            if decision is not None:
                self.mqtt_counts["shed"] += 1
                held.append(uplink)
                delay = max(delay, min(decision.retry_after_s or 1.0, 30.0))
                continue
            self.admission.admitted(decided.headers[HEADER_ORG], 1, now)
            accepted.append((uplink, decided))
        answers = await self._publish([a for _, a in accepted])
        for (uplink, item), (status, _) in zip(accepted, answers, strict=True):
            if status == 201:
                done.append(uplink)
            elif status == 413:
                refused.append(Refused(413, "the stream refused the event", item.headers[HEADER_SOURCE],
                                       item.headers[HEADER_ORG], item.event_tracker_id, item.body,
                                       keep=True, stage="bind"))  # fmt: skip
                done.append(uplink)
            else:
                held.append(uplink)
        await self._keep_unbound(refused)
        await uplinks.settle(done, held, delay_s=delay)
        self.mqtt_counts["accepted"] += len(done) - len(refused)
        self.mqtt_counts["refused"] += len(refused)
        self.mqtt_counts["retried"] += len(held)
        return len(batch)

    async def _parsed(
        self, request: web.Request, limit: int
    ) -> tuple[DataSource, Any, bytes] | web.Response:
        """The authenticated data source, the parsed JSON body and the body, or the error
        answer."""
        body = await request.read()
        source = await self._authenticated(request, body, limit)
        if isinstance(source, web.Response):
            return source
        try:
            return source, orjson.loads(body), body
        except orjson.JSONDecodeError as exc:
            return self._answer(_json(400, {"error": f"body is not JSON: {exc}"}))

    async def _single(self, request: web.Request) -> web.Response:
        parsed = await self._parsed(request, self.settings.max_body_bytes)
        if isinstance(parsed, web.Response):
            return parsed
        source, item, body = parsed
        decision = self._policy.accept(source, item, raw=body)
        self.admission.admitted(source.org_id, 1, time.monotonic())
        if isinstance(decision, Refused):
            await self._keep_unbound([decision])
            return self._answer(_json(decision.status, {"error": decision.error}))
        [(status, payload)] = await self._publish([decision])
        return self._answer(_json(status, payload, 1 if status == 503 else None))

    async def _batch(self, request: web.Request) -> web.Response:
        parsed = await self._parsed(request, self.settings.max_batch_bytes)
        if isinstance(parsed, web.Response):
            return parsed
        source, items, _ = parsed
        if not isinstance(items, list):
            return self._answer(_json(400, {"error": "batch body must be a JSON array"}))
        limit = self.settings.max_batch_items
        if len(items) > limit:
            return self._answer(
                _json(413, {"error": f"batch of {len(items)} events (limit {limit} per request)"})
            )
        self.admission.admitted(source.org_id, len(items), time.monotonic())
        policy = self._policy
        decisions: list[Accepted | Refused] = []
        for start in range(0, len(items), _CHUNK):  # other clients' requests run in between
            if start:
                await asyncio.sleep(0)
            decisions += [policy.accept(source, item) for item in items[start : start + _CHUNK]]
        await self._keep_unbound([d for d in decisions if isinstance(d, Refused)])
        published = await self._publish([d for d in decisions if isinstance(d, Accepted)])
        answers = iter(published)
        results = []
        for decision in decisions:
            if isinstance(decision, Refused):
                results.append({"status": decision.status, "error": decision.error})
            else:
                status, payload = next(answers)
                results.append({"status": status, **payload})
        if any(r["status"] == 503 for r in results):
            # Nothing of the batch that failed was stored: tell the client when to retry it.
            return self._answer(_json(207, {"results": results}, 1))
        return self._answer(_json(207, {"results": results}))
