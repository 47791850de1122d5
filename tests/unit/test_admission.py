"""Admission decisions (pipeline/admission.py): queued seconds, quotas, fair shedding."""

from __future__ import annotations

import pytest

from eventray.pipeline.admission import (
    Admission,
    Backlog,
    DrainMeter,
    Quota,
    TrafficShares,
    quota_table,
)
from eventray.pipeline.models import Organization
from eventray.pipeline.models.org import IngestQuota


def test_the_drain_rate_is_measured_only_while_work_waits() -> None:
    meter = DrainMeter(prior_per_s=1000, busy_backlog=100, alpha=0.5)
    assert meter.drain_per_s == 1000  # the prior until a measurement
    meter.update(0.0, Backlog(pending=50, acked=0))
    meter.update(1.0, Backlog(pending=0, acked=50))  # idle interval: the input's rate, ignored
    assert meter.drain_per_s == 1000
    meter.update(2.0, Backlog(pending=5000, acked=50))
    meter.update(3.0, Backlog(pending=4000, acked=4050))  # busy: 4,000 events/s acknowledged
    assert meter.drain_per_s == 4000 and meter.queued_s == 1.0
    meter.update(4.0, Backlog(pending=4000, acked=6050))  # 2,000/s: moving average
    assert meter.drain_per_s == 3000


def test_stopped_lanes_make_the_backlog_long() -> None:
    meter = DrainMeter(prior_per_s=1000, busy_backlog=1)
    meter.update(0.0, Backlog(pending=500, acked=10))
    meter.update(1.0, Backlog(pending=900, acked=10))  # nothing acknowledged
    assert meter.drain_per_s == 1000  # no rate measured yet: still the prior
    meter.update(2.0, Backlog(pending=900, acked=1010))
    meter.update(3.0, Backlog(pending=900, acked=1010))  # measured 1,000 then 0 -> 500
    meter.update(4.0, Backlog(pending=900, acked=1010))
    assert meter.drain_per_s == 250 and meter.queued_s == pytest.approx(3.6)


def test_a_quota_refuses_before_parsing_with_the_time_to_wait() -> None:
    admission = Admission(max_queue_s=2.0)
    admission.use_quotas({"acme": Quota(10, 20)}, {"acme": "acme", "site": "acme"})
    assert admission.check("site", 0.0) is None
    admission.admitted("site", 25, 0.0)  # one request may take the bucket into debt
    refused = admission.check("acme", 0.0)  # the subtree shares the bucket
    assert refused is not None and refused.status == 429
    assert (
        refused.error
        == "quota of organization 'acme' (10 events/s, burst 20) exceeded; retry later"
    )
    assert refused.retry_after_s == pytest.approx(0.6)  # 6 tokens to repay at 10/s
    assert admission.check("acme", 0.6) is None
    assert admission.check("other", 0.0) is None  # no quota: not limited by one

    held = Admission(max_queue_s=2.0, meter=DrainMeter(prior_per_s=1000))
    held.use_quotas({"big": Quota(1000, 1000)}, {"big": "big"})
    held.admitted("big", 500, 0.0)  # nearly all the traffic, within its quota
    held.admitted("small", 10, 0.0)
    held.meter.update(0.0, Backlog(pending=500, acked=0))  # 0.5 s queued: past shedding
    assert held.check("big", 0.0) is None  # held to its quota, not to a share
    assert held.check("small", 0.0) is None


def test_under_pressure_the_heavy_senders_go_first_then_everyone() -> None:
    admission = Admission(max_queue_s=2.0, shed_heavy_s=0.25, meter=DrainMeter(prior_per_s=1000))
    for second in range(5):
        admission.admitted("flood", 9000, float(second))
        admission.admitted("calm", 500, float(second))
    admission.meter.update(5.0, Backlog(pending=200, acked=0))  # 0.2 s: below the soft limit
    assert admission.check("flood", 5.0) is None
    admission.meter.update(5.5, Backlog(pending=1500, acked=0))  # 1.5 s: past it
    refused = admission.check("flood", 5.5)
    assert refused is not None and refused.retry_after_s == 1.25
    assert refused.error == (
        "1.5 s of work queued (at 1,000 events/s) and organization 'flood' sends more than its "
        "share of the traffic (refused past 0.25 s); retry later"
    )
    assert admission.check("calm", 5.5) is None
    admission.meter.update(6.0, Backlog(pending=4500, acked=0))  # 4.5 s: past the limit
    everyone = admission.check("calm", 6.0)
    assert everyone is not None and everyone.retry_after_s == pytest.approx(2.5)
    assert everyone.error == "4.5 s of work queued (limit 2 s at 1,000 events/s); retry later"


def test_a_share_is_recent_traffic_and_the_quiet_are_not_counted() -> None:
    shares = TrafficShares(half_life_s=1.0)
    shares.add("a", 1000, 0.0)
    shares.add("b", 1000, 0.0)
    assert not shares.heavy("a", 0.0) and not shares.heavy("b", 0.0)  # an equal split
    shares.add("a", 1000, 10.0)  # ten half-lives later b's traffic is forgotten
    assert shares.heavy("a", 10.0) is False  # alone, a is the whole (and its fair) share
    shares.add("b", 10, 10.0)
    assert shares.heavy("a", 10.0) and not shares.heavy("b", 10.0)


def test_quotas_apply_to_the_subtree_of_the_organization_declaring_them() -> None:
    orgs = {
        "root": Organization(id="root", name="R", type="vendor"),
        "acme": Organization(id="acme", name="A", type="customer", parent_id="root",
                             ingest_quota=IngestQuota(events_per_second=50)),
        "site": Organization(id="site", name="S", type="site", parent_id="acme"),
        "own": Organization(id="own", name="O", type="site", parent_id="acme",
                            ingest_quota=IngestQuota(events_per_second=5, burst=10)),
    }  # fmt: skip
    quotas, holder = quota_table(orgs)
    assert quotas == {"acme": Quota(50, 5), "own": Quota(5, 10)}  # burst: 0.1 s by default
    assert holder == {"acme": "acme", "site": "acme", "own": "own"}  # root: none


def test_between_readings_the_estimate_counts_what_was_admitted_and_drained() -> None:
    meter = DrainMeter(prior_per_s=1000)
    meter.update(0.0, Backlog(pending=500, acked=0))
    assert meter.estimate_s(0.0) == 0.5
    meter.admit(3000)  # a flood admitted right after the reading
    assert meter.estimate_s(0.0) == 3.5  # seen at once, not half a second later
    assert meter.estimate_s(1.0) == 2.5  # a second of draining at 1,000 events/s
    assert meter.estimate_s(9.0) == 0.0
    meter.update(1.0, Backlog(pending=2500, acked=1000))  # the reading takes over
    assert meter.added == 0 and meter.estimate_s(1.0) == pytest.approx(2500 / meter.drain_per_s)


def test_a_flood_is_refused_before_the_next_lag_reading() -> None:
    admission = Admission(max_queue_s=2.0, shed_heavy_s=0.25, meter=DrainMeter(prior_per_s=1000))
    admission.meter.update(0.0, Backlog(pending=0, acked=0))
    admission.admitted("calm", 50, 0.0)
    admission.admitted("flood", 400, 0.0)  # 0.45 s of work now, no reading yet
    assert admission.check("flood", 0.01) is not None
    assert admission.check("calm", 0.01) is None


def test_lanes_seen_keeping_up_are_not_held_to_a_low_prior() -> None:
    """At 6,000 events/s the lanes keep up (nothing waits undelivered): the prior of 2,000/s
    must not turn a few in-flight batches into seconds of queue."""
    meter = DrainMeter(prior_per_s=2000, busy_backlog=200)
    meter.update(0.0, Backlog(pending=1000, acked=0, waiting=0))
    meter.update(0.5, Backlog(pending=1000, acked=3000, waiting=50))
    assert meter.drain_per_s == 6000
    # the 1,000 in the lanes' hands are being worked on: what waits is the 50 undelivered
    assert meter.estimate_s(0.5) == pytest.approx(50 / 6000)
    # saturated readings measure the capacity; the larger of the two is used
    meter.update(1.0, Backlog(pending=9000, acked=6000, waiting=8000))
    meter.update(1.5, Backlog(pending=9000, acked=10_000, waiting=8000))
    assert meter.drain_per_s == 8000
