"""Delivering groups of exec actions: order, error handling, retries, circuit breaker.

A :class:`DeliveryGroup` is what one business-rule evaluation (or one trigger router) asks
for: its exec actions with the rule's execution settings. ``sequential`` delivers them in
order and, with ``onError: stop``, skips the rest after a failure; ``parallel`` delivers them
together. Every attempt is recorded (rows of ``logs_trigger``); a delivery that exhausts its
attempts, or fails permanently, is reported for the DLQ. Nothing is dropped silently.

A transport raises :class:`~eventray.pipeline.errors.RetryableError` for a failure worth trying
again and :class:`~eventray.pipeline.errors.PermanentError` for one that is not (a delivery the
egress policy refuses): that one is recorded as one failed attempt, with no response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from eventray.pipeline.errors import EventrayError, PermanentError, RetryableError
from eventray.pipeline.models.trigger import Trigger
from eventray.pipeline.secrets import SecretsSource
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob, Request, build_request

__all__ = [
    "RESPONSE_KEPT_CHARS",
    "Attempt",
    "Deliverer",
    "DeliveryGroup",
    "DeliveryOutcome",
    "SendResult",
    "Sender",
]

RESPONSE_KEPT_CHARS = 2000
"""How much of a response an attempt keeps (``logs_trigger.response``), whatever the transport
read."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """A transport's answer. ``status`` is the protocol's code (HTTP, or SMTP's 250/5xx);
    ``retryable`` and ``error`` override the HTTP reading of it when a transport knows better
    (an SMTP 550 is permanent, an SMTP 451 is worth retrying)."""

    status: int
    body: str
    retry_after_s: float | None = None
    retryable: bool | None = None
    error: str = ""


Sender = Callable[[Request], Awaitable[SendResult]]


@dataclass(frozen=True, slots=True)
class DeliveryGroup:
    jobs: tuple[DeliveryJob, ...]
    mode: str = "sequential"
    on_error: str = "continue"

    def to_bytes(self) -> bytes:
        """One encode for the trigger queue (``default=str`` keeps a datetime in a render
        context as text instead of failing the group)."""
        return orjson.dumps(
            {
                "mode": self.mode,
                "onError": self.on_error,
                "jobs": [job.to_dict() for job in self.jobs],
            },
            default=str,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeliveryGroup:
        """One parse; raises ``ValueError``/``KeyError``/``TypeError`` on a malformed group."""
        data = orjson.loads(raw)
        jobs = tuple(DeliveryJob.from_dict(j) for j in data["jobs"])
        return cls(jobs, data.get("mode", "sequential"), data.get("onError", "continue"))

    def dedup_id(self) -> str:
        return "|".join(job.dedup_id() for job in self.jobs)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one job (a ``logs_trigger`` row)."""

    job: DeliveryJob
    attempt: int
    success: bool
    duration_ms: float
    request: str
    response: str
    error: str


@dataclass(slots=True)
class DeliveryOutcome:
    attempts: list[Attempt] = field(default_factory=list)
    failed: list[tuple[DeliveryJob, str]] = field(default_factory=list)  # for the DLQ
    skipped: list[DeliveryJob] = field(default_factory=list)  # after onError: stop


class Deliverer:
    """Delivers groups through triggers by id.

    Args:
        triggers: the catalog's triggers by id.
        send: the transport (an aiohttp adapter in production, a loopback server in tests).
        secrets: resolves ``{{secrets.NAME}}`` at send time, as the trigger's organization
            sees them; every value rendered is replaced by ``***`` in what is recorded.
        lineage: an organization and its ancestors (``Catalog.lineage``), for shared secrets.
        retry: attempts and backoff.
        breaker: per-trigger circuit breaker.
        sleep: injectable for tests.
    """

    def __init__(
        self,
        triggers: Mapping[str, Trigger],
        send: Sender,
        *,
        secrets: SecretsSource | None = None,
        lineage: Callable[[str], Sequence[str]] = lambda org_id: (org_id,),
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.triggers = triggers
        self.send = send
        self.secrets = secrets
        self.lineage = lineage
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self.sleep = sleep

    async def deliver(self, group: DeliveryGroup) -> DeliveryOutcome:
        outcome = DeliveryOutcome()
        if group.mode == "parallel":
            await asyncio.gather(*(self._deliver_job(job, outcome) for job in group.jobs))
            return outcome
        for index, job in enumerate(group.jobs):
            ok = await self._deliver_job(job, outcome)
            if not ok and group.on_error == "stop":
                outcome.skipped.extend(group.jobs[index + 1 :])
                break
        return outcome

    async def _deliver_job(self, job: DeliveryJob, outcome: DeliveryOutcome) -> bool:
        trigger = self.triggers.get(job.trigger_id)
        if trigger is None or not trigger.enabled:
            reason = "unknown trigger" if trigger is None else "trigger is disabled"
            outcome.failed.append((job, f"{reason} {job.trigger_id!r}"))
            return False
        provider = self.secrets.for_org(self.lineage(trigger.org_id)) if self.secrets else None
        hide: Callable[[str], str] = provider.redact if provider is not None else str

        def failed(attempt: int, elapsed: float, described: str, response: str, error: str) -> None:
            outcome.attempts.append(
                Attempt(job, attempt, False, elapsed, described, hide(response), hide(error))
            )

        try:
            request = build_request(trigger, job, provider)
        except EventrayError as exc:
            failed(1, 0.0, "", "", str(exc))
            outcome.failed.append((job, hide(str(exc))))
            return False
        described = hide(request.describe())
        for attempt in range(1, self.retry.max_attempts + 1):
            if not self.breaker.allow(trigger.id, time.monotonic()):
                error = f"circuit open for trigger {trigger.id!r} after repeated failures"
                failed(attempt, 0.0, described, "", error)
                outcome.failed.append((job, error))
                return False
            started = time.perf_counter()
            retry_after: float | None = None
            # A permanent failure of the send (a refused endpoint) says nothing about the
            # endpoint's health, so it does not count towards opening its circuit; neither
            # does a send that never finished (cancelled by a bounded stop, a sender's bug).
            # Either way the call is released, so a half-open circuit's probe never leaves it
            # waiting (its permit would expire anyway, after the breaker's probe timeout).
            reached = True
            try:
                result = await self.send(request)
            except RetryableError as exc:
                error, retryable, response, retry_after = str(exc), True, "", exc.retry_after_s
            except PermanentError as exc:  # e.g. refused by the egress policy: never retried
                error, retryable, response, reached = str(exc), False, "", False
            except BaseException:
                self.breaker.release(trigger.id)
                raise
            else:
                response = result.body[:RESPONSE_KEPT_CHARS]
                if 200 <= result.status < 300:
                    self.breaker.success(trigger.id)
                    elapsed = (time.perf_counter() - started) * 1000
                    outcome.attempts.append(
                        Attempt(job, attempt, True, elapsed, described, hide(response), "")
                    )
                    return True
                error = result.error or f"HTTP {result.status}"
                retryable = (
                    result.retryable
                    if result.retryable is not None
                    else result.status >= 500 or result.status in (408, 429)
                )
                retry_after = result.retry_after_s
            elapsed = (time.perf_counter() - started) * 1000
            failed(attempt, elapsed, described, response, error)
            if reached:
                self.breaker.failure(trigger.id, time.monotonic())
            else:
                self.breaker.release(trigger.id)
            if not retryable or attempt == self.retry.max_attempts:
                outcome.failed.append((job, hide(f"{error} after {attempt} attempt(s)")))
                return False
            await self.sleep(self.retry.delay(attempt, retry_after))
        return False  # pragma: no cover - the loop always returns
