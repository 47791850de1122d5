"""Retry with exponential backoff, and a circuit breaker per trigger.

The decision travels with the error (``retryable``): a 4xx answer (except 408/429) or a bad
template is permanent and goes to the DLQ at once; timeouts, connection errors, 5xx, 408 and
429 are retried with backoff (``Retry-After`` honoured) until ``max_attempts``. A trigger that
keeps failing opens its circuit: deliveries fail fast for ``reset_s`` instead of piling up,
then one probe delivery decides whether it closes again.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

__all__ = ["CircuitBreaker", "RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempts count from 1)."""
        if retry_after_s is not None:
            return min(self.max_delay_s, max(0.0, retry_after_s))
        base = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass(slots=True)
class _State:
    failures: int = 0
    opened_at: float | None = None  # None: closed
    probe_until: float | None = None  # half-open with a probe out: its permit ends then


@dataclass
class CircuitBreaker:
    """A circuit per key (a trigger): closed, open, half-open.

    Closed lets every call through; ``threshold`` consecutive failures open it. Open refuses
    every call for ``reset_s``; then it is half-open: exactly one call, the probe, is let
    through, and every other call is refused until the probe reports. Its success closes the
    circuit, its failure opens it again for a new ``reset_s``. A probe that never reports (its
    delivery hung, or was cancelled without saying so) holds its permit only for
    ``probe_timeout_s`` (``reset_s`` when not given); then the next caller probes, so the
    circuit cannot stay half-open for ever.

    Callers report every call they were let through: :meth:`success`, :meth:`failure`, or
    :meth:`release` for a call that says nothing about the key's health (refused before it
    reached the endpoint, cancelled), which frees a probe's permit at once. A report is
    taken from whichever call makes it: a success closes the circuit, a failure while
    half-open opens it again. Safe to call from several threads.
    """

    threshold: int = 5
    reset_s: float = 30.0
    probe_timeout_s: float | None = None
    _states: dict[str, _State] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def probe_hold_s(self) -> float:
        """How long a half-open probe may take before another caller may probe."""
        return self.reset_s if self.probe_timeout_s is None else self.probe_timeout_s

    def allow(self, key: str, now: float) -> bool:
        """Whether a call for ``key`` may go now (half-open: takes the probe's permit)."""
        with self._lock:
            state = self._states.get(key)
            if state is None or state.opened_at is None:
                return True  # closed
            if now - state.opened_at < self.reset_s:
                return False  # open
            if state.probe_until is not None and now < state.probe_until:
                return False  # half-open, the probe is out
            state.probe_until = now + self.probe_hold_s  # this call is the probe
            return True

    def success(self, key: str) -> None:
        """A call succeeded: the circuit closes."""
        with self._lock:
            self._states.pop(key, None)

    def failure(self, key: str, now: float) -> None:
        """A call failed: counts towards opening; while half-open, opens again at once."""
        with self._lock:
            state = self._states.setdefault(key, _State())
            state.failures += 1
            half_open = state.opened_at is not None and now - state.opened_at >= self.reset_s
            if half_open or (state.opened_at is None and state.failures >= self.threshold):
                state.opened_at = now
                state.probe_until = None

    def release(self, key: str) -> None:
        """A call that was let through says nothing about ``key``'s health: a probe's permit
        is freed (the next caller probes); otherwise nothing changes."""
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                state.probe_until = None

    def state(self, key: str, now: float) -> str:
        """``closed``, ``open`` or ``half-open`` (probe out or not), without taking a permit."""
        with self._lock:
            state = self._states.get(key)
            if state is None or state.opened_at is None:
                return "closed"
            return "open" if now - state.opened_at < self.reset_s else "half-open"

    def is_open(self, key: str, now: float) -> bool:
        """Whether a call now would be refused (open, or half-open with its probe out);
        asks without taking the probe's permit."""
        with self._lock:
            state = self._states.get(key)
            if state is None or state.opened_at is None:
                return False
            if now - state.opened_at < self.reset_s:
                return True
            return state.probe_until is not None and now < state.probe_until
