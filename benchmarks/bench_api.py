"""The management API's list endpoints with a large configuration: latency per endpoint.

``python -m benchmarks.bench_api [--assets 10000] [--rules 1000] [--requests 300] [--json P]``

Stores the sample tenant plus ``--assets`` assets spread over its organizations and
``--rules`` rules (each with a business rule) in the embedded file config store, starts the API
(the real FastAPI app on uvicorn, over the file config and token stores) in a process of its
own, and from this process sends ``--requests`` sequential requests per endpoint over one
keep-alive connection, after a warm-up, as a root admin and as a tenant's viewer (whose lists
are filtered by scope). Prints p50/p99/max per endpoint against the issue's target
(p99 < 100 ms); figures go to ``.eventray/bench/api-<time>.json`` unless ``--json``.
Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

TARGET_P99_MS = 100.0
TENANT = Path(__file__).resolve().parents[1] / "config" / "samples" / "tenant"
ROOMS = ("alpha-cold-room-1", "alpha-cold-room-2", "depot-beta", "alpha-a-floor-1")


def _documents(assets: int, rules: int) -> list[dict[str, Any]]:
    from eventray.pipeline.errors import ConfigIssue
    from eventray.pipeline.loader import read_documents

    issues: list[ConfigIssue] = []
    docs = [doc for _, doc in read_documents([TENANT], issues)]
    assert not issues, issues
    rule = next(d for d in docs if d["id"] == "high-temp-alert")
    business = next(d for d in docs if d["id"] == "factory-alpha-high-temp")
    out = list(docs)
    for n in range(assets):
        org = ROOMS[n % len(ROOMS)]
        template = "ws301-door" if org == "depot-beta" else "freezer-json"
        group = "rg-store-only" if org == "depot-beta" else "rg-cold-chain"
        out.append({"kind": "Asset", "id": f"bench-asset-{n:05d}", "orgId": org,
                    "assetUUID": f"BENCH-{n:05d}", "name": f"Bench device {n:05d}",
                    "templateId": template, "routeGroupIds": [group], "tags": ["freezer"],
                    "enabled": n % 10 != 0})  # fmt: skip
    for n in range(rules):
        org = ("factory-alpha", "depot-beta")[n % 2]
        copied = {**copy.deepcopy(rule), "id": f"bench-rule-{n:04d}", "orgId": org,
                  "name": f"Bench rule {n:04d}", "shared": False}  # fmt: skip
        out.append(copied)
        out.append({**copy.deepcopy(business), "id": f"bench-br-{n:04d}", "orgId": org,
                    "ruleId": copied["id"], "name": f"Bench business rule {n:04d}"})  # fmt: skip
    return out


def _serve(root: str, ready: Any, stop: Any) -> None:
    """The API in this (child) process until ``stop`` is set."""
    import asyncio

    from eventray.actors.api_app import ApiApp
    from eventray.config.settings import ApiSettings
    from eventray.pipeline.adapters.file_config import FileConfigStore
    from eventray.pipeline.adapters.file_tokens import FileTokenStore
    from eventray.pipeline.management import EntityService, TokenService

    async def run() -> None:
        app = ApiApp(
            entities=EntityService(FileConfigStore(root=Path(root) / "config")),
            tokens=TokenService(FileTokenStore(path=Path(root) / "tokens.json")),
            settings=ApiSettings(port=0),
        )
        port = await app.start()
        ready.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await app.stop()

    asyncio.run(run())


def _measure(client: httpx.Client, path: str, token: str, requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(max(5, requests // 20)):  # warm-up
        client.get(path, headers=headers).raise_for_status()
    samples = []
    items = 0
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        items = len(answer.json().get("items", [1]))
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
        "max_ms": round(samples[-1], 2),
        "items": items,
        "requests": requests,
    }


def _after_writes(client: httpx.Client, token: str, *, rounds: int) -> dict[str, Any]:
    """A write (an asset renamed: the merged catalog of every entity validated, then stored),
    and the list right after it (which rebuilds the view of the new revision)."""
    headers = {"Authorization": f"Bearer {token}"}
    doc = client.get("/assets/bench-asset-00001", headers=headers).json()
    write, read = [], []
    for n in range(rounds):
        started = time.perf_counter()
        client.put("/assets/bench-asset-00001", json={**doc, "name": f"renamed {n}"},
                   headers=headers).raise_for_status()  # fmt: skip
        write.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        client.get("/assets?limit=100", headers=headers).raise_for_status()
        read.append((time.perf_counter() - started) * 1000)

    def figures(samples: list[float]) -> dict[str, float]:
        samples.sort()
        return {"p50_ms": round(statistics.median(samples), 2),
                "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
                "max_ms": round(samples[-1], 2), "requests": len(samples)}  # fmt: skip

    return {"update one asset (validate all, store)": figures(write),
            "list assets right after a write (new view)": figures(read)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from eventray.pipeline.adapters.file_config import FileConfigStore
    from eventray.pipeline.adapters.file_tokens import FileTokenStore
    from eventray.pipeline.management import LOCAL, EntityService, TokenService
    from eventray.pipeline.management.entities import encode_cursor

    with tempfile.TemporaryDirectory(prefix="bench-api-") as root:
        store = FileConfigStore(root=Path(root) / "config")
        started = time.perf_counter()
        store.put(_documents(args.assets, args.rules))
        stored_s = time.perf_counter() - started
        entities = EntityService(store)
        started = time.perf_counter()
        scope = entities.scope(LOCAL)
        view_s = time.perf_counter() - started
        tokens = TokenService(FileTokenStore(path=Path(root) / "tokens.json"))
        admin = tokens.create(scope, org_id="mapex", role="admin").token
        viewer = tokens.create(scope, org_id="alpha-cold-room-2", role="viewer").token
        data_bytes = (Path(root) / "config" / "entities.json").stat().st_size

        ctx = multiprocessing.get_context("spawn")
        ready, stop = ctx.Queue(), ctx.Event()
        server = ctx.Process(target=_serve, args=(root, ready, stop), daemon=True)
        server.start()
        try:
            port = ready.get(timeout=120)
            base = f"http://127.0.0.1:{port}/api/v1/manage"
            middle = encode_cursor(f"bench-asset-{args.assets // 2:05d}")
            endpoints = [
                ("list assets, first page of 100 (root admin)", "/assets?limit=100", admin),
                ("list assets, a page from the middle", f"/assets?limit=100&cursor={middle}", admin),
                ("list assets, 1,000 per page", "/assets?limit=1000", admin),
                ("list assets, name filter (scans all)", "/assets?name=device%2009999", admin),
                ("list assets, enabled=false", "/assets?enabled=false&limit=100", admin),
                ("list assets of a subtree", "/assets?orgId=alpha-a-floor-1&includeChildren=true&limit=100", admin),
                ("list assets as a room's viewer (scope)", "/assets?limit=100", viewer),
                ("list rules, first page of 100", "/rules?limit=100", admin),
                ("list business rules, first page of 100", "/business-rules?limit=100", admin),
                ("list organizations", "/organizations", admin),
                ("get one asset", "/assets/bench-asset-05000", admin),
            ]  # fmt: skip
            results: dict[str, Any] = {}
            with httpx.Client(base_url=base, timeout=60) as client:
                started = time.perf_counter()
                client.get("/assets?limit=1", headers={"Authorization": f"Bearer {admin}"})
                first_s = time.perf_counter() - started
                for name, path, token in endpoints:
                    results[name] = {"path": path, **_measure(client, path, token, args.requests)}
                writes = _after_writes(client, admin, rounds=max(5, args.requests // 15))
        finally:
            stop.set()
            server.join(15)
            if server.is_alive():
                server.kill()

    report = {
        "assets": args.assets,
        "rules": args.rules,
        "business_rules": args.rules,
        "config_file_mb": round(data_bytes / 2**20, 1),
        "store_put_s": round(stored_s, 2),
        "view_build_s": round(view_s, 2),
        "first_request_s": round(first_s, 2),
        "endpoints": results,
        "writes": writes,
        "target_p99_ms": TARGET_P99_MS,
    }
    print(f"{args.assets:,} assets, {args.rules:,} rules + {args.rules:,} business rules "
          f"({report['config_file_mb']} MB stored); view built in {view_s:.2f} s; first request "
          f"in the server {first_s:.2f} s; {args.requests} requests per endpoint, one client")  # fmt: skip
    print(
        f"| {'endpoint':<48} | {'items':>5} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} | target |"
    )
    print(f"|{'-' * 50}|{'-' * 7}|{'-' * 9}|{'-' * 9}|{'-' * 9}|--------|")
    for name, r in results.items():
        met = "met" if r["p99_ms"] < TARGET_P99_MS else "MISSED"
        print(f"| {name:<48} | {r['items']:>5} | {r['p50_ms']:>7.2f} | {r['p99_ms']:>7.2f} | "
              f"{r['max_ms']:>7.2f} | {met:<6} |")  # fmt: skip
    for name, r in writes.items():
        print(f"| {name:<48} | {'':>5} | {r['p50_ms']:>7.2f} | {r['p99_ms']:>7.2f} | "
              f"{r['max_ms']:>7.2f} | {'':<6} |")  # fmt: skip
    out = args.json or Path(".eventray") / "bench" / f"api-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
