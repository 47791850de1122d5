"""Admission at the ingress: backpressure in seconds of queued work, and per-tenant quotas.

Why seconds, not events: the latency an accepted event will see is the work queued ahead of
it divided by the rate the lanes drain it, and that rate depends on the templates, the rules
and the machine. A threshold in events is either far too high (500,000 events queued 71 s of
work on this machine) or wrong the day the workload changes. :class:`DrainMeter` measures the
drain rate from the stream's own acknowledgement counters (so any number of ingresses and
lanes agree) and turns the backlog into seconds.

Why quotas and fair shedding: one tenant's flood must not take the others' capacity.

- A quota (:class:`Quota`, on an organization and shared by its subtree) is a token bucket
  in events per second with a burst (by default a tenth of a second's worth: a request needs
  one token to start, so a small burst does not limit the size of a batch, and a large one
  lets a flood in all at once; measured, a burst of one second's worth put 1,600 events in
  front of the other tenants at the start of a flood and raised their p99 by ~40%). A bucket may go into debt by one request's events, so a
  request is refused before its body is parsed whenever the bucket is empty: refusing a
  flood costs the ingress almost nothing.
- Past ``shed_heavy_s`` of queued work (0.1 s), the organizations without a quota that send
  more than their fair share of the recent traffic are refused (one with a quota is held to
  its quota instead: that is its contract); past ``max_queue_s`` everyone is. So a flood
  without a quota is shed while the queue is still short, instead of filling it for
  everybody. Measured (``benchmarks/bench_tenants.py``), a victim's p99 beside a neighbour
  flooding with no quota: ~2.5 s when heavy senders were shed past 1 s of queue, ~0.8 s past
  0.25 s, ~0.2 s past 0.1 s.

Everything here is pure: time comes in as arguments, so the decisions are tested exactly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from eventray.pipeline.models.org import Organization

__all__ = [
    "Admission",
    "Backlog",
    "Decision",
    "DrainMeter",
    "Quota",
    "QuotaBuckets",
    "TrafficShares",
    "quota_table",
]


@dataclass(frozen=True, slots=True)
class Backlog:
    """The stream's state for one reading: events not yet acknowledged, events acknowledged so
    far (a counter that only grows, summed over the partitions), and of the pending ones those
    not even delivered to a lane yet (``-1``: not known, take ``pending``)."""

    pending: int
    acked: int
    waiting: int = -1

    @property
    def undelivered(self) -> int:
        return self.pending if self.waiting < 0 else self.waiting


@dataclass(slots=True)
class DrainMeter:
    """The lanes' drain rate.

    Two readings: while events wait undelivered the lanes are saturated, and the rate they
    acknowledge at is their capacity (a moving average); while they keep up, the rate is the
    input's, a lower bound of the capacity (the highest of the last few). The rate used is the
    larger of the two (the prior before any saturated reading): a pessimistic prior must not
    refuse traffic the lanes were just seen keeping up with.

    Args:
        prior_per_s: the capacity assumed before the lanes were first seen saturated.
        busy_backlog: a reading counts as saturated when at least this many events waited
            undelivered at its start.
        alpha: weight of the newest saturated measurement in the moving average.
    """

    prior_per_s: float = 2000.0
    busy_backlog: int = 200
    alpha: float = 0.5
    rate_per_s: float = 0.0
    pending: int = 0
    """Events waiting undelivered at the last reading."""
    added: int = 0
    """Events admitted since the last reading (not yet in ``pending``)."""
    _last: tuple[float, Backlog] | None = None
    _kept_up: deque[float] = field(default_factory=lambda: deque(maxlen=20))

    def update(self, now: float, backlog: Backlog) -> None:
        last = self._last
        self._last = (now, backlog)
        # What a new event queues behind: events not yet delivered to a lane. Those in a
        # lane's hands (up to a batch per partition) are being worked on already; counting
        # them would read a lane that keeps up as a queue of a batch or two.
        self.pending = backlog.undelivered
        self.added = 0
        if last is None:
            return
        then, before = last
        elapsed = now - then
        if elapsed <= 0:
            return
        measured = max(0.0, (backlog.acked - before.acked) / elapsed)
        if before.undelivered < self.busy_backlog:
            self._kept_up.append(measured)
        elif self.rate_per_s == 0.0:
            self.rate_per_s = measured
        else:
            self.rate_per_s += self.alpha * (measured - self.rate_per_s)

    @property
    def drain_per_s(self) -> float:
        """Events per second the lanes drain (never below 1: a stopped lane makes the backlog
        as long as it gets, which is what the limit should see)."""
        capacity = self.rate_per_s if self.rate_per_s > 0 else self.prior_per_s
        return max(capacity, max(self._kept_up, default=0.0), 1.0)

    @property
    def queued_s(self) -> float:
        """Seconds of work waiting in the stream, as last read."""
        return self.pending / self.drain_per_s

    def admit(self, events: int) -> None:
        self.added += events

    def estimate_s(self, now: float) -> float:
        """Seconds of work waiting now: the last reading, plus what was admitted since, less
        what the lanes drained meanwhile at the measured rate. Between two readings a flood
        adds thousands of events; the estimate sees them at once."""
        rate = self.drain_per_s
        if self._last is None:
            return (self.pending + self.added) / rate
        drained = (now - self._last[0]) * rate
        return max(0.0, self.pending + self.added - drained) / rate


@dataclass(frozen=True, slots=True)
class Quota:
    events_per_s: float
    burst: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class QuotaBuckets:
    """Token buckets keyed by the organization holding the quota."""

    quotas: Mapping[str, Quota] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def _bucket(self, key: str, quota: Quota, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(quota.burst, now)
        else:
            bucket.tokens = min(quota.burst, bucket.tokens + (now - bucket.at) * quota.events_per_s)
            bucket.at = now
        return bucket

    def wait_s(self, key: str, now: float) -> float:
        """0 if a request may start now, else the seconds until it may."""
        quota = self.quotas.get(key)
        if quota is None:
            return 0.0
        bucket = self._bucket(key, quota, now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / quota.events_per_s

    def take(self, key: str, events: int, now: float) -> None:
        """Debit an admitted request's events (the bucket may go into debt)."""
        quota = self.quotas.get(key)
        if quota is not None:
            self._bucket(key, quota, now).tokens -= events


HEAVY_SHARE = 1.5


@dataclass(slots=True)
class TrafficShares:
    """Recent accepted events per organization, decaying with a half-life, so a share is the
    traffic of the last few seconds."""

    half_life_s: float = 2.0
    _rates: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (value, at)

    def _decayed(self, key: str, now: float) -> float:
        value, at = self._rates.get(key, (0.0, now))
        return value * math.exp2(-(now - at) / self.half_life_s)

    def add(self, key: str, events: int, now: float) -> None:
        self._rates[key] = (self._decayed(key, now) + events, now)
        self._rates["*"] = (self._decayed("*", now) + events, now)
        if len(self._rates) > 10_000:  # forget organizations that went quiet
            self._rates = {k: v for k, v in self._rates.items() if self._decayed(k, now) >= 1}

    def heavy(self, key: str, now: float) -> bool:
        """Whether ``key`` sends more than 1.5 times its fair share of the recent traffic (an
        equal split between the organizations seen sending at least 1% of it): tenants of
        equal traffic are never heavy by noise, one flooding beside others is."""
        total = self._decayed("*", now)
        if total <= 0:
            return False
        active = sum(1 for k in self._rates if k != "*" and self._decayed(k, now) >= 0.01 * total)
        return self._decayed(key, now) > HEAVY_SHARE * total / max(active, 1)


@dataclass(frozen=True, slots=True)
class Decision:
    """A refusal: the HTTP status, the reason and when to retry."""

    status: int
    error: str
    retry_after_s: float


@dataclass(slots=True)
class Admission:
    """Decides, per request, whether the ingress takes it.

    Args:
        max_queue_s: the work (seconds at the measured drain rate) the stream may hold.
        shed_heavy_s: past this much queued work, organizations sending more than their share
            are refused.
        quota_of: the organization whose quota applies to an organization (itself or the
            nearest ancestor holding one), and that quota.
    """

    max_queue_s: float
    shed_heavy_s: float = 0.1
    meter: DrainMeter = field(default_factory=DrainMeter)
    buckets: QuotaBuckets = field(default_factory=QuotaBuckets)
    shares: TrafficShares = field(default_factory=TrafficShares)
    quota_holder: Mapping[str, str] = field(default_factory=dict)

    def use_quotas(self, quotas: Mapping[str, Quota], holder: Mapping[str, str]) -> None:
        """A new catalog: quotas by holding organization, and each organization's holder."""
        self.buckets.quotas = quotas
        self.quota_holder = holder

    def check(self, org_id: str, now: float) -> Decision | None:
        """Before the body is parsed: refuse, or None to go on."""
        holder = self.quota_holder.get(org_id)
        if holder is not None:
            wait = self.buckets.wait_s(holder, now)
            if wait > 0:
                quota = self.buckets.quotas[holder]
                return Decision(
                    429,
                    f"quota of organization {holder!r} ({quota.events_per_s:g} events/s, burst "
                    f"{quota.burst:g}) exceeded; retry later",
                    wait,
                )
        queued = self.meter.estimate_s(now)
        limit, soft = self.max_queue_s, min(self.shed_heavy_s, self.max_queue_s)
        if queued <= soft:
            return None
        rate = f"{self.meter.drain_per_s:,.0f} events/s"
        if queued > limit:
            return Decision(
                429,
                f"{queued:.1f} s of work queued (limit {limit:g} s at {rate}); retry later",
                max(1.0, queued - limit),
            )
        if holder is None and self.shares.heavy(org_id, now):
            return Decision(
                429,
                f"{queued:.1f} s of work queued (at {rate}) and organization {org_id!r} sends "
                f"more than its share of the traffic (refused past {soft:g} s); retry later",
                max(1.0, queued - soft),
            )
        return None

    def admitted(self, org_id: str, events: int, now: float) -> None:
        """Count an admitted request's events against its quota and share."""
        holder = self.quota_holder.get(org_id)
        if holder is not None:
            self.buckets.take(holder, events, now)
        self.shares.add(org_id, events, now)
        self.meter.admit(events)


def quota_table(orgs: Mapping[str, Organization]) -> tuple[dict[str, Quota], dict[str, str]]:
    """Quotas by the organization that declares one, and for every organization the holder
    whose bucket it draws from (itself or its nearest ancestor with a quota)."""
    quotas = {
        org.id: Quota(q.events_per_second, q.burst or max(q.events_per_second / 10, 1.0))
        for org in orgs.values()
        if (q := org.ingest_quota) is not None
    }
    holder: dict[str, str] = {}
    for org in orgs.values():
        seen: set[str] = set()
        node: Organization | None = org
        while node is not None and node.id not in seen:
            if node.id in quotas:
                holder[org.id] = node.id
                break
            seen.add(node.id)
            node = orgs.get(node.parent_id) if node.parent_id is not None else None
    return quotas, holder
