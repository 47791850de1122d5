"""Which lane owns which partition, by measured load.

Events are partitioned by organization (one writer per rule-state key), and a hash of a few
busy organizations can put most of the traffic on one lane: the sample tenant's three busy
organizations put 80% of it on one of two lanes. There are more partitions than lanes, so
partitions can move: :func:`plan_move` looks at each partition's measured rate and proposes
the one move (a partition from the busiest lane to the idlest) that lowers the busiest lane's
load the most, if that is worth a brief pause of the partition. One move per round, and only
past a tolerance, so the assignment does not flap on noise. A partition's organizations stay
together, so one organization hotter than a whole lane's fair share cannot be split: the plan
then stops at the best it can do.

Pure: rates in, an assignment out. The stack measures and applies (``cluster/stack.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Move", "RateMeter", "lane_loads", "plan_join", "plan_leave", "plan_move"]


@dataclass(frozen=True, slots=True)
class Move:
    partition: int
    source: str
    target: str


def lane_loads(
    assignment: Mapping[str, Sequence[int]], rates: Mapping[int, float]
) -> dict[str, float]:
    return {lane: sum(rates.get(p, 0.0) for p in parts) for lane, parts in assignment.items()}


def plan_move(
    assignment: Mapping[str, Sequence[int]],
    rates: Mapping[int, float],
    *,
    tolerance: float = 0.2,
    min_rate: float = 50.0,
) -> Move | None:
    """The move that most lowers the busiest lane's load, or None.

    Args:
        assignment: partitions per lane.
        rates: events per second per partition, measured.
        tolerance: act only when the busiest lane carries more than ``1 + tolerance`` times
            the mean, and a move lowers the maximum by more than ``tolerance / 2`` of it.
        min_rate: below this total (events/s) the imbalance costs nothing: leave it.
    """
    loads = lane_loads(assignment, rates)
    if len(loads) < 2:
        return None
    total = sum(loads.values())
    if total < min_rate:
        return None
    mean = total / len(loads)
    busiest = max(loads, key=lambda lane: loads[lane])
    idlest = min(loads, key=lambda lane: loads[lane])
    if loads[busiest] <= (1 + tolerance) * mean:
        return None
    best: Move | None = None
    best_max = loads[busiest]
    for partition in assignment[busiest]:
        rate = rates.get(partition, 0.0)
        if rate <= 0:
            continue
        new_max = max(
            loads[busiest] - rate,
            loads[idlest] + rate,
            *(load for lane, load in loads.items() if lane not in (busiest, idlest)),
        )
        if new_max < best_max:
            best, best_max = Move(partition, busiest, idlest), new_max
    if best is None or loads[busiest] - best_max <= tolerance / 2 * loads[busiest]:
        return None
    return best


def plan_join(
    assignment: Mapping[str, Sequence[int]], lane: str, rates: Mapping[int, float] | None = None
) -> list[Move]:
    """The moves that give a new, empty ``lane`` its share when the scaling adds it: one
    partition at a time from the lane holding the most (the busiest by ``rates`` among those),
    until it holds ``partitions // lanes``. Each lane loses at most what keeps the split even,
    so only the partitions that must move pause."""
    rates = rates or {}
    owned = {name: list(parts) for name, parts in assignment.items()}
    owned.setdefault(lane, [])
    total = sum(len(parts) for parts in owned.values())
    want = total // len(owned)
    moves: list[Move] = []
    while len(owned[lane]) < want:
        loads = lane_loads(owned, rates)
        source = max(
            (name for name in owned if name != lane),
            key=lambda name: (len(owned[name]), loads[name], name),
        )
        # the source's busiest partition: the new lane relieves it most
        partition = max(owned[source], key=lambda p: (rates.get(p, 0.0), -p))
        owned[source].remove(partition)
        owned[lane].append(partition)
        moves.append(Move(partition, source, lane))
    return moves


def plan_leave(
    assignment: Mapping[str, Sequence[int]], lane: str, rates: Mapping[int, float] | None = None
) -> list[Move]:
    """The moves that empty ``lane`` before the scaling removes it: each of its partitions
    (busiest first) to the remaining lane with the fewest, then the lightest load."""
    rates = rates or {}
    owned = {name: list(parts) for name, parts in assignment.items() if name != lane}
    if not owned:
        raise ValueError(f"{lane} is the only lane: its partitions have nowhere to go")
    moves: list[Move] = []
    for partition in sorted(assignment[lane], key=lambda p: (-rates.get(p, 0.0), p)):
        loads = lane_loads(owned, rates)
        target = min(owned, key=lambda name: (len(owned[name]), loads[name], name))
        owned[target].append(partition)
        moves.append(Move(partition, lane, target))
    return moves


@dataclass(slots=True)
class RateMeter:
    """Events per second per partition from cumulative counters read now and then."""

    _last: tuple[float, dict[int, int]] | None = None

    def update(self, now: float, counts: Mapping[int, int]) -> dict[int, float] | None:
        """The rates since the previous reading (None on the first, or if time stood still).
        A counter that went down (a lane restarted, stats reset) reads as 0 for that round."""
        last, self._last = self._last, (now, dict(counts))
        if last is None or now <= last[0]:
            return None
        then, before = last
        return {
            p: max(0, n - before.get(p, 0)) / (now - then) if n >= before.get(p, 0) else 0.0
            for p, n in counts.items()
        }
