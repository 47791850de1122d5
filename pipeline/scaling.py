"""How many lanes, by consumer lag: add one when lag keeps growing, remove one when it is gone.

Lag (events waiting in the stream, summed over the partitions) is what a user of the platform
feels, and it is what grows when the lanes cannot keep up, whatever the reason (a heavier
template, a burst, a slower store). So the policy watches lag alone to decide *up*, and the
lanes' busy share (seconds of pipeline work per second of wall time, from the stage counters)
to decide whether one fewer lane would still keep up before it says *down*.

"Busy" is :class:`Utilisation`: the events per second the lanes carry now over the most they
carried per lane while saturated.

It must not flap: a lane costs a process and a partition move pauses a partition briefly.
Three things keep it calm:

- **a window**: a decision needs ``window_s`` of samples that all agree (lag stayed above
  ``up_lag`` all through the window and did not fall by a tenth; or lag stayed at most
  ``down_lag`` all through it);
- **hysteresis**: ``up_lag`` is far above ``down_lag``, and *down* also needs the remaining
  lanes to be below ``down_busy`` busy with the load of the lane removed;
- **a cooldown**: after any change, nothing for ``cooldown_s`` (the new lane needs its
  partitions moved and a few batches before lag can reflect it), and the window starts afresh.

Pure: samples and an injected time in, a :class:`Decision` out. The stack measures and acts
(``cluster/stack.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Decision", "Direction", "ScalingLimits", "ScalingPolicy", "Utilisation"]

Direction = Literal["up", "down", "hold"]
# Lag above up_lag that fell by less than this over the window is not draining: the
# ingress's admission caps the queue at a few seconds of work, so a lane set that cannot keep
# up shows a high plateau (with noise), not ever-growing lag.
_NOT_FALLING = 0.9


@dataclass(frozen=True, slots=True)
class ScalingLimits:
    """The policy's bounds and thresholds (from ``pipeline.lanes_min`` ... ``scale_*``)."""

    lanes_min: int
    lanes_max: int
    up_lag: int = 2000
    down_lag: int = 50
    window_s: float = 10.0
    cooldown_s: float = 20.0
    down_busy: float = 0.6

    def __post_init__(self) -> None:
        if not 1 <= self.lanes_min <= self.lanes_max:
            raise ValueError(f"need 1 <= lanes_min ({self.lanes_min}) <= lanes_max "
                             f"({self.lanes_max})")  # fmt: skip
        if self.down_lag >= self.up_lag:
            raise ValueError(f"down_lag ({self.down_lag}) must be below up_lag ({self.up_lag})")

    @property
    def enabled(self) -> bool:
        return self.lanes_min < self.lanes_max


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now: ``lanes`` is the count wanted (equal to the current one on hold)."""

    direction: Direction
    lanes: int
    lag: int
    reason: str
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    lag: int
    busy: float | None


@dataclass
class ScalingPolicy:
    """Feed it a sample per supervision round with :meth:`observe`; act on what it returns.

    The caller reports back with :meth:`applied` once a change is made (or failed: then
    the cooldown still applies, so a lane that cannot be placed is not retried every round).
    """

    limits: ScalingLimits
    _samples: deque[_Sample] = field(default_factory=deque)
    _changed_at: float | None = None

    def observe(
        self,
        now: float,
        lag: Mapping[int, int] | int,
        lanes: int,
        busy: float | None = None,
    ) -> Decision:
        """One sample: ``lag`` per partition (or the total), the lanes running now, and their
        mean busy share since the previous sample (None when unknown: *down* then relies on
        lag alone)."""
        total = int(lag if isinstance(lag, int) else sum(lag.values()))
        limits = self.limits
        if lanes < limits.lanes_min:
            return self._decide("up", lanes + 1, total, now,
                                f"{lanes} lanes is below lanes_min {limits.lanes_min}")  # fmt: skip
        if lanes > limits.lanes_max:
            return self._decide("down", lanes - 1, total, now,
                                f"{lanes} lanes is above lanes_max {limits.lanes_max}")  # fmt: skip
        self._samples.append(_Sample(now, total, busy))
        while len(self._samples) > 1 and now - self._samples[1].at >= limits.window_s:
            self._samples.popleft()  # keep exactly one sample at or before the window's start
        if self._changed_at is not None and now - self._changed_at < limits.cooldown_s:
            left = limits.cooldown_s - (now - self._changed_at)
            return Decision("hold", lanes, total, f"cooling down ({left:.0f} s left)", now)
        first = self._samples[0]
        if now - first.at < limits.window_s:
            return Decision("hold", lanes, total, "window not filled yet", now)
        lowest = min(s.lag for s in self._samples)
        if lowest >= limits.up_lag and total >= _NOT_FALLING * first.lag:
            if lanes >= limits.lanes_max:
                return Decision("hold", lanes, total, f"lag growing, at lanes_max {lanes}", now)
            return self._decide(
                "up", lanes + 1, total, now,
                f"lag {total} stayed >= {limits.up_lag} for {now - first.at:.0f} s "
                f"(from {first.lag}: not draining)",
            )  # fmt: skip
        if all(s.lag <= limits.down_lag for s in self._samples) and lanes > limits.lanes_min:
            known = [s.busy for s in self._samples if s.busy is not None]
            mean = sum(known) / len(known) if known else 0.0
            after = mean * lanes / (lanes - 1)
            if after > limits.down_busy:
                return Decision("hold", lanes, total,
                                f"drained, but {lanes - 1} lanes would be {after:.0%} busy", now)  # fmt: skip
            return self._decide(
                "down", lanes - 1, total, now,
                f"lag <= {limits.down_lag} for {now - first.at:.0f} s, {lanes - 1} lanes "
                f"would be {after:.0%} busy",
            )  # fmt: skip
        return Decision("hold", lanes, total, "within bounds", now)

    def applied(self, now: float) -> None:
        """A change was made (or tried) at ``now``: cool down and start a fresh window."""
        self._changed_at = now
        self._samples.clear()

    def _decide(
        self, direction: Direction, lanes: int, lag: int, now: float, reason: str
    ) -> Decision:
        return Decision(direction, lanes, lag, reason, now)


@dataclass
class Utilisation:
    """The lanes' busy share: events per second now over what they were seen to carry at
    most, per lane, while a backlog of at least ``backlog`` events waited (they were
    saturated then). Unknown (None) until a saturated reading was taken.

    Why not the stage timers: they are wall-clock seconds per batch, and a lane runs one loop
    per partition at once, so they add up to more than one second per second even at a fifth
    of capacity (measured: 200% "busy" at 20% of the load). Caveat: on a machine where lanes
    share cores, one lane alone carries more than each of two; the peak is one lane's, so the
    share reads low with more lanes and a removal can come back as an addition one cooldown
    later, never sooner.
    """

    backlog: int
    per_lane_peak: float = 0.0
    _last: tuple[float, dict[str, int]] | None = None

    def update(self, now: float, handled: Mapping[str, int], lag: int) -> float | None:
        """``handled``: events each lane carried so far (a counter; one that went down, a lane
        restarted, reads as 0 for the round). Returns the share since the previous call."""
        last, self._last = self._last, (now, dict(handled))
        if last is None or now <= last[0] or not handled:
            return None
        then, before = last
        carried = sum(max(0, n - before.get(name, 0)) for name, n in handled.items())
        rate = carried / (now - then)
        if lag >= self.backlog:
            self.per_lane_peak = max(self.per_lane_peak, rate / len(handled))
        if self.per_lane_peak <= 0:
            return None
        return min(1.0, rate / (self.per_lane_peak * len(handled)))
