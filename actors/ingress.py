"""The thin HTTP ingress (CONTRACTS.md "HTTP ingestion") as an async actor over aiohttp.

The decisions are :class:`pipeline.ingress.IngressPolicy`'s; this shell parses requests,
publishes accepted events to JetStream and answers once the stream acknowledged them (201),
keeps refused authentications for ``events_raw``, and applies backpressure: 429 with
``Retry-After`` when too many events wait in the stream, 503 when the stream does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
import ray
from aiohttp import web

from cluster.wiring import Endpoints, catalog_from, make_bus, make_config_store, retention_policy
from config.settings import Settings
from pipeline.adapters.nats_bus import BusError, JetStreamBus
from pipeline.ingress import Accepted, IngressPolicy, Refused
from pipeline.models import DataSource
from pipeline.storage.rows import RowContext, refusal_row

__all__ = ["IngressActor"]

CONFIG_SUBJECT = "eventray.config"


def _json(status: int, payload: Any, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class IngressActor:
    def __init__(self, settings: Settings, endpoints: Endpoints, store_actor: Any) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.store = store_actor
        self._bus: JetStreamBus | None = None
        self._runner: web.AppRunner | None = None
        self._lag = 0
        self._started = False
        self._lag_task: asyncio.Task[None] | None = None
        self.port = 0
        self.counts: dict[int, int] = {}

    async def start(self) -> int:
        """Start serving; returns the port (idempotent)."""
        if self._started:
            return self.port
        self._started = True
        self._bus = make_bus(self.settings, self.endpoints)
        await self._bus.connect()
        self.reload()
        await self._bus.client.subscribe(CONFIG_SUBJECT, cb=self._on_config)
        app = web.Application(client_max_size=self.settings.ingress.max_body_bytes * 64)
        app.router.add_post("/api/v1/events", self._single)
        app.router.add_post("/api/v1/events/batch", self._batch)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.ingress.host, self.settings.ingress.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._lag_task = asyncio.create_task(self._watch_lag())
        return self.port

    async def health(self) -> dict[str, Any]:
        port = await self.start()
        return {"port": port, "lag": self._lag, "answers": dict(self.counts)}

    async def _on_config(self, msg: Any) -> None:
        self.reload()

    def reload(self) -> None:
        catalog, _ = catalog_from(make_config_store(self.endpoints))
        self._policy = IngressPolicy(
            catalog,
            partitions=self.settings.pipeline.partitions,
            subject_prefix=self.settings.nats.subject_prefix,
            max_body_bytes=self.settings.ingress.max_body_bytes,
        )
        self._rows = RowContext.from_catalog(
            catalog, retention_policy(self.settings), log_detail=self.settings.store.log_detail
        )

    async def _watch_lag(self) -> None:
        assert self._bus is not None
        while True:
            total = 0
            for partition in range(self.settings.pipeline.partitions):
                with contextlib.suppress(BusError):
                    total += await self._bus.pending(partition)
            self._lag = total
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ handlers
    async def _health(self, request: web.Request) -> web.Response:
        return _json(200, {"ok": True, "lag": self._lag})

    async def _authenticated(self, request: web.Request, body: bytes) -> DataSource | web.Response:
        if len(body) > self.settings.ingress.max_body_bytes * (
            64 if request.path.endswith("batch") else 1
        ):
            return self._answer(_json(413, {"error": "body too large"}))
        headers = {k.lower(): v for k, v in request.headers.items()}
        source = self._policy.source(
            request.query.get("ds"),
            headers=headers,
            query=dict(request.query),
            client_ip=request.remote or "",
            body=body,
        )
        if isinstance(source, Refused):
            if source.keep:
                await self._keep(source)
            return self._answer(_json(source.status, {"error": source.error}))
        if self._lag > self.settings.ingress.max_lag:
            return self._answer(
                _json(429, {"error": f"{self._lag} events waiting; retry later"}, 1)
            )
        return source

    async def _keep(self, refused: Refused) -> None:
        row = refusal_row(
            event_tracker_id=refused.event_tracker_id,
            org_id=refused.org_id,
            data_source_id=refused.data_source_id,
            body=refused.body,
            reason=refused.error,
            at=datetime.now(UTC),
            context=self._rows,
        )
        with contextlib.suppress(Exception):  # the answer does not wait on the store being up
            await asyncio.wait_for(self.store.insert_rows.remote({"events_raw": [row]}), 5)

    def _answer(self, response: web.Response) -> web.Response:
        self.counts[response.status] = self.counts.get(response.status, 0) + 1
        return response

    async def _publish(self, accepted: Accepted) -> tuple[int, dict[str, Any]]:
        assert self._bus is not None
        try:
            await self._bus.publish(
                accepted.subject,
                accepted.body,
                msg_id=accepted.event_tracker_id,
                headers=accepted.headers,
            )
        except BusError as exc:
            return 503, {"error": f"stream unavailable: {exc}"}
        return 201, {"eventTrackerId": accepted.event_tracker_id}

    async def _single(self, request: web.Request) -> web.Response:
        body = await request.read()
        source = await self._authenticated(request, body)
        if isinstance(source, web.Response):
            return source
        try:
            item = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._answer(_json(400, {"error": f"body is not JSON: {exc}"}))
        decision = self._policy.accept(source, item)
        if isinstance(decision, Refused):
            return self._answer(_json(decision.status, {"error": decision.error}))
        status, payload = await self._publish(decision)
        return self._answer(_json(status, payload, 1 if status == 503 else None))

    async def _batch(self, request: web.Request) -> web.Response:
        body = await request.read()
        source = await self._authenticated(request, body)
        if isinstance(source, web.Response):
            return source
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._answer(_json(400, {"error": f"body is not JSON: {exc}"}))
        if not isinstance(items, list):
            return self._answer(_json(400, {"error": "batch body must be a JSON array"}))
        decisions = [self._policy.accept(source, item) for item in items]
        published = await asyncio.gather(
            *(self._publish(d) for d in decisions if isinstance(d, Accepted))
        )
        answers = iter(published)
        results = []
        for decision in decisions:
            if isinstance(decision, Refused):
                results.append({"status": decision.status, "error": decision.error})
            else:
                status, payload = next(answers)
                results.append({"status": status, **payload})
        self.counts[207] = self.counts.get(207, 0) + 1
        return _json(207, {"results": results})

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._bus is not None:
            await self._bus.close()
