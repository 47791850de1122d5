"""Tenant isolation under a flood: does one tenant's traffic move another's latency?

``python -m benchmarks.bench_tenants [--victim 600] [--quota 1500] [--seconds 15]``

Two copies of the sample tenant on the embedded stack (2 lanes). The *victim* (tenant 1)
posts at a steady rate throughout; the *neighbour* (tenant 2) posts, phase by phase:

0. a warm-up with both at their rates, not reported (the balancer settles the lanes);
1. nothing (the victim alone: the baseline of this run);
2. at its quota (``ingestQuota`` on its customer organization);
3. at 10x its quota, not retrying refused requests (a flood); 2 and 3 alternate ``--rounds``
   times and the victim's p99 is compared as the median of the rounds;
4. the same flood with no quota configured (only the ingress's fair shedding under
   pressure protects the victim);

and the victim's ingress->stored latency (p50/p99, measured by the lanes per data source) is
printed per phase with the neighbour's accepted rate and refusals, and the lanes' share of the
events (partition balance). The target: phase 3 moves the victim's p99 by < 10% from phase 2.
The traffic generator runs in this process and shares the machine's 2 cores with the stack,
so the neighbour posts large batches (its client costs little), the victim small ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_e2e import _catalog, _cpu, _cpu_delta, _settle, _Sinks, _stored, _wait
from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import sample_documents, sample_secrets
from eventray.config.settings import load_settings
from eventray.pipeline.adapters.secrets_file import write_secrets_file
from eventray.pipeline.catalog import Catalog
from eventray.testing.simulator import DeviceSimulator
from eventray.testing.tenants import copy_tenants
from eventray.testing.traffic import TrafficResult, _auth_headers, send_traffic

VICTIM, NEIGHBOUR = "-t1", "-t2"


def _tenant(documents: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """The vendor organization and one tenant's copies (for that tenant's simulator)."""
    return [d for d in documents if d["id"].endswith(suffix) or
            (d.get("kind") == "Organization" and not d.get("parentId"))]  # fmt: skip


def _with_quota(documents: list[dict[str, Any]], quota: float | None) -> list[dict[str, Any]]:
    out = copy.deepcopy(documents)
    for doc in out:
        if doc.get("kind") == "Organization" and doc["id"] == "acme-foods" + NEIGHBOUR:
            if quota is None:
                doc.pop("ingestQuota", None)
            else:
                doc["ingestQuota"] = {"eventsPerSecond": quota}
    return out


async def _flood(
    url: str, catalog: Catalog, *, rate: float, seconds: float, chunk: int
) -> TrafficResult:
    """The neighbour: requests built once and posted again and again at ``rate`` events/s,
    refusals not retried. A real flood's client runs elsewhere; building 15,000 simulated
    uplinks a second here would take CPU from the stack and show as the victim's latency."""
    import aiohttp

    auth = _auth_headers(catalog)
    simulator = DeviceSimulator(catalog, seed=12, bad_ratio=0.0)
    # Every request holds exactly ``chunk`` uplinks of one data source, in the order the
    # devices produce them: whichever requests the quota lets through, the neighbour's
    # accepted traffic has the same mix as when all of it is accepted (requests of unequal
    # sizes would shift it, and with it the lanes' work per event).
    by_ds: dict[str, list[bytes]] = {}
    for uplink in simulator.take(64 * chunk):
        by_ds.setdefault(uplink.data_source_id, []).append(uplink.body)
    cut = {ds: [bodies[i : i + chunk] for i in range(0, len(bodies) - chunk + 1, chunk)]
           for ds, bodies in by_ds.items()}  # fmt: skip
    requests: list[tuple[str, bytes, int]] = []
    for index in range(max(len(parts) for parts in cut.values())):
        for ds, parts in cut.items():
            if index < len(parts):
                requests.append((ds, b"[" + b",".join(parts[index]) + b"]", chunk))
    result = TrafficResult()
    limit = asyncio.Semaphore(8)
    started = time.perf_counter()

    async def one(session: aiohttp.ClientSession, ds: str, body: bytes, n: int) -> None:
        try:
            async with session.post(
                f"{url}/api/v1/events/batch?ds={ds}",
                data=body,
                headers={"Content-Type": "application/json", **auth.get(ds, {})},
            ) as response:
                if response.status == 207:
                    for item in orjson.loads(await response.read())["results"]:
                        result.answers[int(item["status"])] += 1
                else:
                    result.answers[response.status] += n
        finally:
            limit.release()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
        tasks: set[asyncio.Task[None]] = set()
        sent = 0
        index = 0
        while sent < rate * seconds:
            ds, body, n = requests[index % len(requests)]
            index += 1
            await limit.acquire()
            task = asyncio.create_task(one(session, ds, body, n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += n
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        if tasks:
            await asyncio.gather(*tasks)
    result.sent = sent
    result.seconds = time.perf_counter() - started
    return result


def _victim_latency(stack: Stack, sources: set[str]) -> dict[str, float]:
    samples: list[tuple[int, float, float]] = []
    for lane in stack.status()["lanes"]:
        for source, figures in lane["latency_by_source"].items():
            if source in sources and figures["n"]:
                samples.append((figures["n"], figures["p50_ms"], figures["p99_ms"]))
    n = sum(s[0] for s in samples)
    return {
        "n": n,
        "p50_ms": max((s[1] for s in samples), default=0.0),
        "p99_ms": max((s[2] for s in samples), default=0.0),
    }


def run(
    victim_rate: float, quota: float, seconds: float, neighbour_chunk: int = 200, rounds: int = 3
) -> dict[str, Any]:
    import ray

    data = Path(tempfile.mkdtemp(prefix="eventray-tenants-"))
    settings = load_settings(
        data_dir=data,
        ingress={"port": 0},
        mqtt={"port": 0},
        api={"enabled": False},  # the management API is not measured here (its own bench)
        metrics={"enabled": False},
        ray={"num_cpus": 2, "include_dashboard": False},  # figures comparable with earlier runs
        triggers={"allow_networks": ["127.0.0.1/32"]},  # the loopback sinks
    )
    phases: list[dict[str, Any]] = []
    with _Sinks() as sinks:
        documents = copy_tenants(sample_documents(sinks.webhook, sinks.smtp_port), 2)
        victim = _catalog(_tenant(documents, VICTIM))
        neighbour = _catalog(_tenant(documents, NEIGHBOUR))
        victim_sources = set(victim.data_sources)
        neighbour_sources = set(neighbour.data_sources)
        write_secrets_file(settings.secrets_path, sample_secrets(documents, "bench-token"))
        stack = Stack(settings)
        try:
            stack.start()
            stack.wait_revision(stack.apply(_with_quota(documents, quota)))
            url = stack.ingress_url
            balancing = threading.Event()

            def balance() -> None:  # what `eventray up` does every 30 s, more often here
                while not balancing.wait(3.0):
                    with contextlib.suppress(Exception):
                        stack.rebalance()

            balancer = threading.Thread(target=balance, name="balancer", daemon=True)
            balancer.start()

            async def phase(neighbour_rate: float, name: str) -> dict[str, Any]:
                _settle(stack, sinks)
                ray.get([lane.reset_stats.remote() for lane in stack.lanes()])
                before = stack.status()["ingress"]
                base = _stored(stack)
                cpu_before, sent_before = _cpu(), sinks.counts()
                started = time.perf_counter()
                senders = [
                    send_traffic(url, victim, events=int(victim_rate * seconds),
                                 rate=victim_rate, chunk=10, concurrency=8, seed=11)
                ]  # fmt: skip
                if neighbour_rate:
                    senders.append(
                        _flood(url, neighbour, rate=neighbour_rate, seconds=seconds,
                               chunk=neighbour_chunk)
                    )  # fmt: skip
                results: list[TrafficResult] = await asyncio.gather(*senders)
                cpu = _cpu_delta(cpu_before, _cpu())
                sent = sinks.counts()
                wall = time.perf_counter() - started
                accepted = sum(r.answers.get(201, 0) for r in results)
                _wait(lambda: _stored(stack), base + accepted)
                status = stack.status()
                lanes = [lane["events"] for lane in status["lanes"]]
                ingress = status["ingress"]
                other = results[1] if len(results) > 1 else TrafficResult()
                return {
                    "phase": name,
                    "victim": _victim_latency(stack, victim_sources),
                    "neighbour": _victim_latency(stack, neighbour_sources),
                    "victim_answers": dict(results[0].answers),
                    "neighbour_offered_per_s": round(neighbour_rate),
                    "neighbour_accepted_per_s": round(
                        other.answers.get(201, 0) / max(other.seconds, 1e-9)
                    ),
                    "neighbour_refused": other.answers.get(429, 0),
                    "shed": {
                        k: ingress["shed"][k] - before["shed"].get(k, 0) for k in ingress["shed"]
                    },
                    "deliveries": {k: sent[k] - sent_before.get(k, 0) for k in sent},
                    "cpu_cores": {k: round(v / wall, 3) for k, v in cpu.items()},
                    "lane_share": [round(n / max(sum(lanes), 1), 3) for n in lanes],
                }

            async def all_phases() -> None:
                # Warm up with both tenants at their rates, long enough for the balancer to
                # settle the lanes (a move pauses a partition: not something to measure).
                await phase(quota, "warm-up")
                phases.append(await phase(0, "victim alone"))
                # At quota and at 10x alternate, so the machine's drift weighs on both alike.
                for _ in range(rounds):
                    phases.append(await phase(quota, "neighbour at its quota"))
                    phases.append(await phase(10 * quota, "neighbour at 10x its quota"))

            asyncio.run(all_phases())
            stack.wait_revision(stack.apply(_with_quota(documents, None)))
            phases.append(asyncio.run(phase(10 * quota, "same flood, no quota configured")))
            balancing.set()
            balancer.join()
        finally:
            stack.stop()

    def p99s(name: str) -> list[float]:
        return [p["victim"]["p99_ms"] for p in phases if p["phase"] == name]

    at_quota = statistics.median(p99s("neighbour at its quota"))
    flood = statistics.median(p99s("neighbour at 10x its quota"))
    return {
        "victim_rate": victim_rate,
        "neighbour_chunk": neighbour_chunk,
        "quota": quota,
        "seconds": seconds,
        "phases": phases,
        "victim_p99_at_quota_ms": at_quota,
        "victim_p99_at_10x_ms": flood,
        "p99_change_10x_vs_quota": round(flood / at_quota - 1, 3) if at_quota else None,
        "moves": [f"p{m.partition} {m.source}->{m.target}" for m in stack.moves],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--victim", type=float, default=600, help="victim events/s")
    parser.add_argument("--quota", type=float, default=1500, help="neighbour's quota, events/s")
    parser.add_argument("--seconds", type=float, default=15, help="per phase")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternations of the at-quota and 10x phases"
    )
    parser.add_argument(
        "--neighbour-chunk", type=int, default=200, help="events per request of the neighbour"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(args.victim, args.quota, args.seconds, args.neighbour_chunk, args.rounds)
    print(
        f"victim {args.victim:,.0f} events/s (10 per request); neighbour's quota "
        f"{args.quota:,.0f} events/s ({args.neighbour_chunk} per request)"
    )
    print(f"{'phase':34} {'victim p50':>10} {'victim p99':>10} {'nbr offered':>11} "
          f"{'nbr accepted':>12} {'nbr 429':>8} {'nbr p99':>8} {'lane share':>12}")  # fmt: skip
    for p in result["phases"]:
        print(
            f"{p['phase']:34} {p['victim']['p50_ms']:>8.0f}ms {p['victim']['p99_ms']:>8.0f}ms "
            f"{p['neighbour_offered_per_s']:>11,} {p['neighbour_accepted_per_s']:>12,} "
            f"{p['neighbour_refused']:>8,} {p['neighbour']['p99_ms']:>6.0f}ms "
            f"{p['lane_share']!s:>12}"
        )
    change = result["p99_change_10x_vs_quota"]
    if change is not None:
        print(
            f"victim p99, median of the rounds: {result['victim_p99_at_quota_ms']:.0f} ms at "
            f"quota, {result['victim_p99_at_10x_ms']:.0f} ms at 10x: {change:+.1%} "
            "(target < +10%)"
        )
    print(f"partition moves: {', '.join(result['moves']) or 'none'}")
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_bytes(
            orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        )


if __name__ == "__main__":
    main()
