"""What the console's Overview costs the store: ``query_activity`` (the three grouped queries
behind ``GET /overview``) on embedded chDB holding N events of the last minutes, spread over 50
organizations, counted for 12 cards (a parent and 11 children). Seven runs: median, min, max.
The baseline is what the Overview did before: one page of up to 10,000 raw events per card
(which also undercounts a card whose window holds more).

    python -m benchmarks.bench_overview 100000
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eventray.pipeline.adapters.chdb_store import ChdbEventStore
from eventray.pipeline.storage.activity import ActivityQuery, Card, query_activity
from eventray.pipeline.storage.query import EventQuery, query_events
from eventray.pipeline.storage.schema import column_types, columns_of
from eventray.pipeline.storage.scope import Scope

ORGS = 50


def _default(kind: str, now_ms: int) -> Any:
    if kind.startswith("Map"):
        return {}
    if kind.startswith("Array"):
        return []
    if "Int" in kind or "Float" in kind:
        return 0
    return now_ms if kind.startswith("DateTime") else ""


def main(events: int) -> None:
    now_ms = int(time.time() * 1000)
    cols, kinds = columns_of("events"), column_types("events")
    codes = [f"{i:04d}" for i in range(1, ORGS + 1)]
    rows = []
    for i in range(events):  # spread over the last 8 minutes (inside the 10-minute window)
        row = {c: _default(k, now_ms) for c, k in zip(cols, kinds, strict=True)}
        row.update(created=now_ms - i * 480_000 // events, org_id=f"org{i % ORGS}",
                   path_key=f"0001/{codes[i % ORGS]}", event_tracker_id=f"t{i}",
                   retention_days=30, event_type="temperature",
                   payload='{"temperature": -18.5, "humidity": 61, "doorOpen": false}',
                   metadata='{"assetId": "freezer-01", "source": "gateway"}')  # fmt: skip
        rows.append(tuple(row[c] for c in cols))
    with tempfile.TemporaryDirectory() as tmp:
        store = ChdbEventStore(path=Path(tmp), database="bench")
        try:
            store.ensure_schema()
            for start in range(0, events, 50_000):
                store.insert("events", rows[start : start + 50_000])
            cards = (Card("root", "0001"),
                     *(Card(f"org{i}", f"0001/{c}") for i, c in enumerate(codes[:11])))  # fmt: skip
            query = ActivityQuery(Scope.platform(), cards, minutes=10)
            times = []
            for _ in range(7):
                began = time.perf_counter()
                found = query_activity(store, query, database="bench")
                times.append((time.perf_counter() - began) * 1000)
            assert sum(found.series["root"]["events"]) == events
            pages, seen = [], 0
            for _ in range(7):
                began = time.perf_counter()
                seen = 0
                for card in cards:
                    page = query_events(store, EventQuery(scope=Scope(card.path_key), since=query.first_minute,
                                                         limit=10_000), database="bench")  # fmt: skip
                    seen += len(page.rows)
                pages.append((time.perf_counter() - began) * 1000)
        finally:
            store.close()
    rows = events + 11 * events // ORGS  # the parent's card holds all, each child's a 50th
    print(f"{events} events in the window, 12 cards:")
    print(f"  GET /overview (grouped counts): median {statistics.median(times):.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}), exact")  # fmt: skip
    print(f"  baseline (10,000 raw rows a card): median {statistics.median(pages):.1f} ms "
          f"(min {min(pages):.1f}, max {max(pages):.1f}), saw {seen} of the {rows} rows")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
