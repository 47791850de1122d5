"""Posting simulated device traffic to the HTTP ingress (demo and end-to-end benchmark)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.models.datasource import ApiKeyAuth
from eventray.testing.simulator import DeviceSimulator, Uplink

__all__ = ["TrafficResult", "post_traffic", "send_traffic"]


@dataclass
class TrafficResult:
    sent: int = 0
    seconds: float = 0.0
    answers: Counter[int] = field(default_factory=Counter)
    tracker_ids: list[str] = field(default_factory=list)
    send_times: dict[str, float] = field(default_factory=dict)


def _auth_headers(catalog: Catalog) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for ds in catalog.data_sources.values():
        if isinstance(ds.auth, ApiKeyAuth) and ds.auth.in_ == "header":
            out[ds.id] = {ds.auth.name: ds.auth.key}
        else:
            out[ds.id] = {}
    return out


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    ds: str,
    headers: dict[str, str],
    uplinks: list[Uplink],
    result: TrafficResult,
    attempts: int = 20,
) -> None:
    body = b"[" + b",".join(u.body for u in uplinks) + b"]"
    sent_at = time.time()
    for attempt in range(attempts):
        async with session.post(
            f"{url}/api/v1/events/batch?ds={ds}",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        ) as response:
            if response.status in (429, 503):
                if attempt == attempts - 1:
                    break
                await asyncio.sleep(
                    float(response.headers.get("Retry-After", "1")) * (attempt + 1) / 4
                )
                continue
            payload = orjson.loads(await response.read())
            break
    if response.status in (429, 503):
        result.answers[response.status] += len(uplinks)
        return
    for item in payload.get("results", []):
        result.answers[int(item["status"])] += 1
        tracker = item.get("eventTrackerId")
        if tracker:
            result.tracker_ids.append(tracker)
            result.send_times[tracker] = sent_at
    result.sent += len(uplinks)


async def _run(
    url: str,
    catalog: Catalog,
    *,
    events: int,
    rate: float,
    chunk: int,
    concurrency: int,
    simulator: DeviceSimulator,
    progress: Callable[[TrafficResult], None] | None,
    attempts: int = 20,
) -> TrafficResult:
    result = TrafficResult()
    auth = _auth_headers(catalog)
    limit = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    last_progress = started
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        tasks: set[asyncio.Task[None]] = set()
        produced = 0
        while produced < events:
            uplinks = simulator.take(min(chunk, events - produced))
            produced += len(uplinks)
            by_ds: dict[str, list[Uplink]] = {}
            for uplink in uplinks:
                by_ds.setdefault(uplink.data_source_id, []).append(uplink)
            for ds, group in by_ds.items():
                await limit.acquire()

                async def one(ds: str = ds, group: list[Uplink] = group) -> None:
                    try:
                        await _post(session, url, ds, auth.get(ds, {}), group, result, attempts)
                    finally:
                        limit.release()

                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if rate > 0:
                ahead = produced / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            now = time.perf_counter()
            if progress is not None and now - last_progress >= 1.0:
                progress(result)
                last_progress = now
        if tasks:
            await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - started
    return result


def post_traffic(
    url: str,
    catalog: Catalog,
    *,
    events: int,
    rate: float = 0.0,
    chunk: int = 250,
    concurrency: int = 8,
    seed: int = 7,
    progress: Callable[[TrafficResult], None] | None = None,
) -> TrafficResult:
    """Post ``events`` simulated uplinks (batch endpoint), at ``rate`` events/s (0 = flat out)."""
    return asyncio.run(
        send_traffic(url, catalog, events=events, rate=rate, chunk=chunk,
                     concurrency=concurrency, seed=seed, progress=progress)
    )  # fmt: skip


async def send_traffic(
    url: str,
    catalog: Catalog,
    *,
    events: int,
    rate: float = 0.0,
    chunk: int = 250,
    concurrency: int = 8,
    seed: int = 7,
    progress: Callable[[TrafficResult], None] | None = None,
    attempts: int = 20,
) -> TrafficResult:
    """:func:`post_traffic` in the caller's event loop (several senders at once);
    ``attempts``: tries per request on 429/503 (1: a refused request is counted, not retried)."""
    return await _run(
        url,
        catalog,
        events=events,
        rate=rate,
        chunk=chunk,
        concurrency=concurrency,
        simulator=DeviceSimulator(catalog, seed=seed),
        progress=progress,
        attempts=attempts,
    )
