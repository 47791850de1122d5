"""Retry with exponential backoff, and a circuit breaker per trigger.

The decision travels with the error (``retryable``): a 4xx answer (except 408/429) or a bad
template is permanent and goes to the DLQ at once; timeouts, connection errors, 5xx, 408 and
429 are retried with backoff (``Retry-After`` honoured) until ``max_attempts``. A trigger that
keeps failing opens its circuit: deliveries fail fast for ``reset_s`` instead of piling up.
"""

from __future__ import annotations

import random
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
    opened_at: float | None = None


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures of one key; half-opens after ``reset_s``."""

    threshold: int = 5
    reset_s: float = 30.0
    _states: dict[str, _State] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        state = self._states.get(key)
        if state is None or state.opened_at is None:
            return True
        return now - state.opened_at >= self.reset_s  # half-open: let one through

    def success(self, key: str) -> None:
        self._states.pop(key, None)

    def failure(self, key: str, now: float) -> None:
        state = self._states.setdefault(key, _State())
        state.failures += 1
        if state.failures >= self.threshold:
            state.opened_at = now

    def is_open(self, key: str, now: float) -> bool:
        return not self.allow(key, now)
