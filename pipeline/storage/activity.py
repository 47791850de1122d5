"""Per-minute activity of organizations' subtrees: events stored, DLQ entries made, trigger
deliveries that succeeded and failed; and the entries still waiting to be redriven (the DLQ's
and the ingress's refusals at ``bind``, whenever made). The console's Overview charts these.

Counting happens in the store, grouped by ``(path_key, minute)``, so the answer's size is
bounded by the organizations that had activity times the minutes asked, not by the events
(a page of raw rows, as the Overview first fetched, undercounts once a window holds more
rows than one page). Each row is then credited to every card whose subtree holds it: a
parent's card includes its children's rows, as its scope does. Tables are read ``FINAL``, so a
replayed event or a redelivered log row counts once. Pending entries are counted over the
DLQ reader's own query (:func:`~.dead_letters.dead_letter_sql`, not redriven), up to
:data:`PENDING_CAP` per source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from eventray.pipeline.errors import InvalidQuery
from eventray.pipeline.ports import EventStore
from eventray.pipeline.replay.model import DeadLetterQuery
from eventray.pipeline.storage.conditions import subtree, time_range
from eventray.pipeline.storage.dead_letters import dead_letter_sql
from eventray.pipeline.storage.schema import DEFAULT_DATABASE, check_identifier
from eventray.pipeline.storage.scope import Scope

__all__ = [
    "MAX_CARDS",
    "MAX_MINUTES",
    "PENDING_CAP",
    "Activity",
    "ActivityQuery",
    "Card",
    "query_activity",
]

MAX_MINUTES: Final = 60
MAX_CARDS: Final = 50
SERIES: Final = ("events", "dlq", "triggersOk", "triggersFailed")
PENDING_CAP: Final = 100_000
"""The most pending entries read per source for the count (more: ``pending_capped``)."""

# series -> (table, the count expression(s) per row group)
_COUNTS: Final[dict[str, tuple[str, str]]] = {
    "events": ("events", "count() AS events"),
    "dlq": ("dlq", "count() AS dlq"),
    "triggers": ("logs_trigger",
                 "countIf(success = 1) AS triggersOk, countIf(success = 0) AS triggersFailed"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Card:
    """One organization whose subtree is counted (its pathKey from the catalog)."""

    org_id: str
    path_key: str


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """The last ``minutes`` whole minutes up to ``now`` (the current minute included), for
    each card, within the caller's ``scope``.

    Raises:
        InvalidQuery: no card, too many, or a minute count outside 1..60.
    """

    scope: Scope
    cards: tuple[Card, ...]
    minutes: int = 10
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if isinstance(self.minutes, bool) or not 1 <= self.minutes <= MAX_MINUTES:
            raise InvalidQuery(
                f"minutes must be 1..{MAX_MINUTES}, got {self.minutes!r}", param="minutes"
            )
        if not 1 <= len(self.cards) <= MAX_CARDS:
            raise InvalidQuery(f"1..{MAX_CARDS} organizations, got {len(self.cards)}", param="org")

    @property
    def first_minute(self) -> datetime:
        now = self.now.astimezone(UTC).replace(second=0, microsecond=0)
        return now - timedelta(minutes=self.minutes - 1)


@dataclass(frozen=True, slots=True)
class Activity:
    """Per card (by organization id), each series' count per minute, oldest first (minute
    ``i`` starts at ``since + i`` minutes), and its entries waiting for a redrive
    (``pending``; ``pending_capped``: a source held more than :data:`PENDING_CAP`)."""

    since: datetime
    minutes: int
    series: dict[str, dict[str, list[int]]]
    pending: dict[str, int] = field(default_factory=dict)
    pending_capped: bool = False


def statements(query: ActivityQuery, *, database: str) -> list[tuple[str, dict[str, Any]]]:
    """One grouped SELECT per table, every value a server-side parameter."""
    db = check_identifier(database)
    out = []
    for table, counts in _COUNTS.values():
        where: list[str] = []
        params: dict[str, Any] = {}
        time_range(where, params, query.first_minute, None)
        if query.scope.path_key is not None:
            subtree(where, params, query.scope.path_key, name="scope")
        out.append((
            f"SELECT path_key, toUnixTimestamp(toStartOfMinute(created)) AS minute, {counts} "
            f"FROM {db}.{table} FINAL WHERE {' AND '.join(where)} GROUP BY path_key, minute",
            params,
        ))  # fmt: skip
    return out


def pending_statements(query: ActivityQuery, *, database: str) -> list[tuple[str, dict[str, Any]]]:
    """Per source, the entries not redriven counted by pathKey, over the DLQ reader's query."""
    out = []
    for source in ("dlq", "events_raw"):
        inner, params = dead_letter_sql(
            DeadLetterQuery(source=source, scope=query.scope.path_key or "", redriven=False,
                            limit=PENDING_CAP),
            database=database,
        )  # fmt: skip
        out.append((f"SELECT path_key, count() AS pending FROM ({inner}) GROUP BY path_key",
                    params))  # fmt: skip
    return out


def _holding(cards: tuple[Card, ...], path_key: str) -> list[str]:
    """The cards whose subtree holds a row of ``path_key`` (a parent's and a child's both)."""
    return [c.org_id for c in cards
            if path_key == c.path_key or path_key.startswith(c.path_key + "/")]  # fmt: skip


def query_activity(
    store: EventStore, query: ActivityQuery, *, database: str = DEFAULT_DATABASE
) -> Activity:
    """Count with ``store`` (see the module's docstring)."""
    start = query.first_minute
    first = int(start.timestamp()) // 60
    series = {c.org_id: {name: [0] * query.minutes for name in SERIES} for c in query.cards}
    for sql, params in statements(query, database=database):
        for row in store.select(sql, params):
            slot = int(row["minute"]) // 60 - first
            if not 0 <= slot < query.minutes:
                continue  # a clock step between the query's start and the store's now
            for org_id in _holding(query.cards, str(row["path_key"])):
                for name in SERIES:
                    if name in row:
                        series[org_id][name][slot] += int(row[name])
    pending = {c.org_id: 0 for c in query.cards}
    capped = False
    for sql, params in pending_statements(query, database=database):
        rows = store.select(sql, params)
        capped = capped or sum(int(row["pending"]) for row in rows) >= PENDING_CAP
        for row in rows:
            for org_id in _holding(query.cards, str(row["path_key"])):
                pending[org_id] += int(row["pending"])
    return Activity(start, query.minutes, series, pending, capped)
