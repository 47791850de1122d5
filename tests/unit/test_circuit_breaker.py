"""The per-trigger circuit breaker (pipeline/triggers/policy.py) and how deliveries honour it.

Closed -> ``threshold`` failures -> open for ``reset_s`` -> half-open: exactly one probe goes,
every other caller fails fast until the probe reports (success closes, failure opens again for
a new ``reset_s``); a probe that never reports frees its permit after the probe timeout, and
a delivery that was cancelled or refused before reaching the endpoint frees it at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from eventray.pipeline.errors import PermanentError
from eventray.pipeline.models import Trigger
from eventray.pipeline.triggers import delivery
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, SendResult
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob, Request

KEY = "hook"


def opened(threshold: int = 2, reset_s: float = 10.0, **kw: Any) -> CircuitBreaker:
    """A breaker whose circuit for KEY opened at t=100."""
    breaker = CircuitBreaker(threshold=threshold, reset_s=reset_s, **kw)
    for _ in range(threshold):
        assert breaker.allow(KEY, 100.0)
        breaker.failure(KEY, 100.0)
    return breaker


def test_failures_open_the_circuit_for_reset_s() -> None:
    breaker = CircuitBreaker(threshold=3, reset_s=10.0)
    for now in (1.0, 2.0):
        assert breaker.allow(KEY, now)
        breaker.failure(KEY, now)
    assert breaker.state(KEY, 2.5) == "closed" and breaker.allow(KEY, 2.5)
    breaker.failure(KEY, 3.0)
    assert breaker.state(KEY, 3.0) == "open"
    assert not any(breaker.allow(KEY, t) for t in (3.0, 8.0, 12.99))
    assert breaker.allow("other", 5.0)  # one circuit per key


def test_a_success_before_the_threshold_starts_the_count_again() -> None:
    breaker = CircuitBreaker(threshold=2, reset_s=10.0)
    breaker.failure(KEY, 1.0)
    breaker.success(KEY)
    breaker.failure(KEY, 2.0)
    assert breaker.state(KEY, 2.0) == "closed"


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker = opened()
    assert breaker.state(KEY, 110.0) == "half-open"
    assert not breaker.is_open(KEY, 110.0)  # asking does not take the permit
    assert breaker.allow(KEY, 110.0)  # the probe
    assert breaker.is_open(KEY, 110.0)
    assert not any(breaker.allow(KEY, t) for t in (110.0, 111.0, 115.0, 119.9))


def test_the_probe_s_success_closes_the_circuit() -> None:
    breaker = opened()
    assert breaker.allow(KEY, 110.0)
    assert not breaker.allow(KEY, 111.0)
    breaker.success(KEY)
    assert breaker.state(KEY, 111.0) == "closed"
    assert all(breaker.allow(KEY, 111.0) for _ in range(5))
    breaker.failure(KEY, 112.0)  # the count starts afresh: one failure does not reopen it
    assert breaker.allow(KEY, 112.0)


def test_the_probe_s_failure_opens_the_circuit_for_a_new_reset_s() -> None:
    breaker = opened()
    assert breaker.allow(KEY, 110.0)
    breaker.failure(KEY, 112.0)
    assert breaker.state(KEY, 112.0) == "open"
    assert not any(breaker.allow(KEY, t) for t in (112.0, 115.0, 121.99))  # 112 + 10
    assert breaker.allow(KEY, 122.0)  # the next probe
    assert not breaker.allow(KEY, 122.0)


def test_a_probe_that_never_reports_frees_its_permit_after_the_probe_timeout() -> None:
    breaker = opened()  # probe timeout: reset_s
    assert breaker.allow(KEY, 110.0)
    assert not breaker.allow(KEY, 119.9)
    assert breaker.allow(KEY, 120.0)  # the silent probe's permit expired: a new probe
    assert not breaker.allow(KEY, 120.5)
    short = opened(probe_timeout_s=2.0)
    assert short.allow(KEY, 110.0)
    assert not short.allow(KEY, 111.9)
    assert short.allow(KEY, 112.0)


def test_a_released_probe_lets_the_next_caller_probe_at_once() -> None:
    breaker = opened()
    assert breaker.allow(KEY, 110.0)
    breaker.release(KEY)  # e.g. cancelled before it reached the endpoint
    assert breaker.state(KEY, 110.5) == "half-open"
    assert breaker.allow(KEY, 110.5)
    assert not breaker.allow(KEY, 110.6)
    breaker.release("unknown")  # nothing to free


def test_a_late_failure_of_a_call_let_through_while_closed_reopens_a_half_open_circuit() -> None:
    breaker = opened()
    breaker.failure(KEY, 105.0)  # a call from before it opened, failing while it is open
    assert breaker.allow(KEY, 110.0)  # the reset window was not extended by it
    breaker.failure(KEY, 111.0)  # any failure while half-open is the endpoint failing
    assert not breaker.allow(KEY, 120.0) and breaker.allow(KEY, 121.0)


def test_concurrent_threads_get_exactly_one_probe() -> None:
    breaker = opened()
    callers = 32
    start = threading.Barrier(callers)
    results: list[bool] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        allowed = breaker.allow(KEY, 110.0)
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * (callers - 1) + [True]


# --------------------------------------------------------------------------- deliveries

TRIGGER = Trigger.model_validate({
    "id": KEY, "orgId": "o", "name": "h", "triggerType": "http",
    "config": {"http": {"endpoint": "http://hooks.example/x", "timeoutMs": 1000}},
})  # fmt: skip


def job(n: int) -> DeliveryJob:
    context = {"event": {"data": {}}, "metadata": {}, "state": {}, "params": {}}
    return DeliveryJob(f"trk-{n}", "o", "0001", KEY, None, context, "br", f"a-{n}")


class Endpoint:
    """A fake transport: each send waits for ``gate`` (when set) and answers ``status``, or
    raises ``error``; counts the sends that started."""

    def __init__(self) -> None:
        self.sends = 0
        self.status = 200
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: Request) -> SendResult:
        self.sends += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return SendResult(self.status, "")


def deliverer(endpoint: Endpoint, breaker: CircuitBreaker) -> Deliverer:
    async def no_sleep(seconds: float) -> None:
        return None

    return Deliverer({KEY: TRIGGER}, endpoint, retry=RetryPolicy(max_attempts=1),
                     breaker=breaker, sleep=no_sleep)  # fmt: skip


def half_open(monkeypatch: pytest.MonkeyPatch) -> CircuitBreaker:
    """An open circuit whose reset has passed by the deliverer's clock."""
    breaker = opened(reset_s=10.0)
    clock = SimpleNamespace(monotonic=lambda: 110.0, perf_counter=time.perf_counter)
    monkeypatch.setattr(delivery, "time", clock)  # the deliverer's clock only, not the loop's
    return breaker


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def test_concurrent_deliveries_in_half_open_send_one_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = half_open(monkeypatch)
    endpoint = Endpoint()

    async def scenario() -> None:
        endpoint.gate = asyncio.Event()
        d = deliverer(endpoint, breaker)
        group = DeliveryGroup(tuple(job(n) for n in range(10)), mode="parallel")
        running = asyncio.create_task(d.deliver(group))
        await asyncio.sleep(0.05)
        assert endpoint.sends == 1  # the probe; the nine others failed fast
        endpoint.gate.set()
        outcome = await running
        assert sum(a.success for a in outcome.attempts) == 1
        assert len(outcome.failed) == 9
        assert {reason for _, reason in outcome.failed} == {
            "circuit open for trigger 'hook' after repeated failures"
        }
        assert breaker.state(KEY, 110.0) == "closed"  # the probe succeeded
        after = await d.deliver(DeliveryGroup(tuple(job(n) for n in range(3)), mode="parallel"))
        assert [a.success for a in after.attempts] == [True] * 3 and endpoint.sends == 4

    run(scenario)


def test_a_failed_probe_opens_the_circuit_again(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = half_open(monkeypatch)
    endpoint = Endpoint()
    endpoint.status = 503

    async def scenario() -> None:
        d = deliverer(endpoint, breaker)
        outcome = await d.deliver(DeliveryGroup((job(1), job(2))))
        assert [a.error for a in outcome.attempts] == [
            "HTTP 503", "circuit open for trigger 'hook' after repeated failures"
        ]  # fmt: skip
        assert endpoint.sends == 1 and breaker.state(KEY, 110.0) == "open"

    run(scenario)


def test_a_cancelled_probe_frees_its_permit(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = half_open(monkeypatch)
    endpoint = Endpoint()

    async def scenario() -> None:
        endpoint.gate = asyncio.Event()
        d = deliverer(endpoint, breaker)
        probe = asyncio.create_task(d.deliver(DeliveryGroup((job(1),))))
        await asyncio.sleep(0.02)
        assert breaker.is_open(KEY, 110.0)  # the probe is out
        probe.cancel()  # a bounded stop, say
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert not breaker.is_open(KEY, 110.0)  # not waiting for the permit to expire
        endpoint.gate.set()
        outcome = await d.deliver(DeliveryGroup((job(2),)))
        assert [a.success for a in outcome.attempts] == [True] and endpoint.sends == 2

    run(scenario)


def test_a_probe_refused_before_the_endpoint_frees_its_permit_without_counting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    breaker = half_open(monkeypatch)
    endpoint = Endpoint()
    endpoint.error = PermanentError("refused by the egress policy")

    async def scenario() -> None:
        d = deliverer(endpoint, breaker)
        first = await d.deliver(DeliveryGroup((job(1),)))
        assert first.failed[0][1] == "refused by the egress policy after 1 attempt(s)"
        assert breaker.state(KEY, 110.0) == "half-open" and not breaker.is_open(KEY, 110.0)
        endpoint.error = None
        second = await d.deliver(DeliveryGroup((job(2),)))
        assert [a.success for a in second.attempts] == [True]
        assert breaker.state(KEY, 110.0) == "closed"

    run(scenario)
