"""Route-group evaluation: which routers fire for an event, and a history record per group.

Route groups are compiled once, twice over: :class:`Router` predicates become closures over
compiled paths (the reference semantics, used for views that are not plain dicts and as the
fallback for uncommon value types), and each group also becomes one generated function
(:mod:`pipeline.rules.codegen`) with the common comparisons inline, so
:meth:`RouteTable.route` costs one call per group instead of two or three per match rule.
"""

from __future__ import annotations

import operator as op_
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from eventray.pipeline.models.routing import MatchRule, RouteGroup, Router
from eventray.pipeline.paths import MISSING, compile_path
from eventray.pipeline.patterns import compile_pattern
from eventray.pipeline.rules.codegen import NUMBERS, Paths, Source
from eventray.pipeline.rules.operators import loose_equal
from eventray.pipeline.rules.values import as_number

__all__ = ["Dispatch", "GroupHistory", "RouteTable", "RoutingResult"]

Predicate = Callable[[Any], bool]
GroupFn = Callable[[Any, list["Dispatch"]], "GroupHistory"]


class Dispatch(NamedTuple):
    """Where an event goes: ``save_event``, ``rules``, ``trigger`` (with id) or ``publish``.
    A tuple, so de-duplicating dispatches per event is a C-level comparison."""

    kind: str
    target: str | None = None


@dataclass(slots=True)
class GroupHistory:
    """What one route group did with one event (rows of ``logs_router``)."""

    route_group_id: str
    version: int
    evaluated: int = 0
    matched: list[int] = field(default_factory=list)
    kinds: tuple[str, ...] = ()
    skipped: str | None = None

    @property
    def dispatched(self) -> list[str]:
        """The router kinds that fired, in order."""
        return [self.kinds[i] for i in self.matched]


@dataclass(slots=True)
class RoutingResult:
    dispatches: list[Dispatch]
    history: list[GroupHistory]

    def has(self, kind: str) -> bool:
        for dispatch in self.dispatches:  # noqa: SIM110 - hot path: no generator
            if dispatch.kind == kind:
                return True
        return False


_ORDER = {"gt": op_.gt, "gte": op_.ge, "lt": op_.lt, "lte": op_.le}
_NUMBER = (int, float)


def _compare(op: str, expected: Any) -> Callable[[Any], bool]:
    """Numbers (numeric strings included) compare as numbers, two strings as text: the same
    coercion the rule engine's greaterThan & co. use."""
    compare = _ORDER[op]
    want = as_number(expected)
    if want is not None:

        def numeric(v: Any) -> bool:
            if type(v) in _NUMBER:  # `type(v) in` excludes bools, cheaply
                return bool(compare(v, want))
            got = as_number(v)
            return got is not None and bool(compare(got, want))

        return numeric
    if isinstance(expected, str):
        return lambda v: isinstance(v, str) and bool(compare(v, expected))
    return lambda v: False


def _is_plain_text(value: Any) -> bool:
    """Text that loose equality can only match by plain ``==``: not numeric, not a boolean."""
    return (
        isinstance(value, str)
        and as_number(value) is None
        and value.lower() not in ("true", "false")
    )


def compile_match_rule(rule: MatchRule) -> Predicate:
    """A predicate over the event view; a missing field fails its rule.

    Routers compare like the rule engine's operators (``loose_equal``, numeric coercion), so
    one event is judged the same way by a route group and by a business rule.
    """
    get = compile_path(rule.field)
    op, expected = rule.operator, rule.value
    test: Callable[[Any], bool]
    if op == "exists":
        wanted = expected is not False

        def exists(view: Any) -> bool:
            value = get(view)
            return (value is not MISSING and value is not None) == wanted

        return exists
    if op == "eq" and _is_plain_text(expected):

        def equals_text(view: Any) -> bool:  # the common case: one call, no coercion
            return bool(get(view) == expected)

        return equals_text
    if op in _ORDER and type(expected) in _NUMBER:
        compare, slow = _ORDER[op], _compare(op, expected)

        def numeric(view: Any) -> bool:  # fused: numbers compare inline, the rest coerces
            value = get(view)
            if type(value) in _NUMBER:
                return bool(compare(value, expected))
            return value is not MISSING and slow(value)

        return numeric
    if op == "eq":
        test = lambda v: loose_equal(v, expected)  # noqa: E731
    elif op == "neq":
        test = lambda v: not loose_equal(v, expected)  # noqa: E731
    elif op in ("gt", "gte", "lt", "lte"):
        test = _compare(op, expected)
    elif op in ("in", "nin"):
        options = list(expected)

        def inside(v: Any) -> bool:
            return any(loose_equal(v, o) for o in options)

        test = inside if op == "in" else (lambda v: not inside(v))
    else:  # regex: RE2, linear time (the model refused a pattern RE2 does not take)
        search = compile_pattern(str(expected)).search
        test = lambda v: isinstance(v, (str, int, float)) and search(str(v))  # noqa: E731

    def predicate(view: Any) -> bool:
        value = get(view)
        return value is not MISSING and test(value)

    return predicate


def _router_predicate(router: Router) -> Predicate | None:
    if router.match is None or not router.match.rules:
        return None  # no match = always dispatch
    checks = tuple(compile_match_rule(rule) for rule in router.match.rules)
    if len(checks) == 1:
        return checks[0]
    if router.match.policy == "all":

        def every(view: Any) -> bool:
            for check in checks:  # noqa: SIM110 - a plain loop is ~2x faster than all(genexpr)
                if not check(view):
                    return False
            return True

        return every

    def some(view: Any) -> bool:
        for check in checks:  # noqa: SIM110 - a plain loop is ~2x faster than any(genexpr)
            if check(view):
                return True
        return False

    return some


@dataclass(frozen=True, slots=True)
class _CompiledGroup:
    group: RouteGroup
    routers: tuple[tuple[int, Dispatch, Predicate | None], ...]
    kinds: tuple[str, ...]
    fast: GroupFn  # for views that are dicts (every event): generated
    slow: GroupFn  # for anything else: the closures


def _dispatch_of(router: Router) -> Dispatch:
    if router.kind == "trigger" and router.trigger is not None:
        return Dispatch("trigger", router.trigger.trigger_id)
    if router.kind == "publish" and router.publish is not None:
        return Dispatch("publish", router.publish.subject)
    return Dispatch(router.kind)


def _compile_group(group: RouteGroup) -> _CompiledGroup:
    routers = tuple(
        (index, _dispatch_of(router), _router_predicate(router))
        for index, router in enumerate(group.routers)
    )
    kinds = tuple(r.kind for r in group.routers)
    if not group.enabled:

        def skipped(view: Any, dispatches: list[Dispatch]) -> GroupHistory:
            return GroupHistory(group.id, group.version, skipped="disabled")

        return _CompiledGroup(group, routers, kinds, skipped, skipped)

    def slow(view: Any, dispatches: list[Dispatch]) -> GroupHistory:
        matched: list[int] = []
        for index, dispatch, predicate in routers:
            if predicate is None or predicate(view):
                matched.append(index)
                if dispatch not in dispatches:
                    dispatches.append(dispatch)
        return GroupHistory(group.id, group.version, len(routers), matched, kinds)

    return _CompiledGroup(group, routers, kinds, _generate_group(group, routers, kinds), slow)


def _generate_group(
    group: RouteGroup,
    routers: tuple[tuple[int, Dispatch, Predicate | None], ...],
    kinds: tuple[str, ...],
) -> GroupFn:
    """One function per group: read each path once, then one ``if`` per router."""
    source = Source(("view", "dispatches"))
    paths = Paths(source, "view")
    source.declare("matched", "fresh")
    # With pairwise distinct dispatches, nothing this group adds can repeat another: the
    # membership test is needed only if earlier groups dispatched something.
    distinct = len({d for _, d, _ in routers}) == len(routers)
    if distinct:
        source.emit(0, "fresh = not dispatches")
    unconditional = []
    for index, _, predicate in routers:
        if predicate is not None:
            break
        unconditional.append(str(index))
    source.emit(0, f"matched = [{', '.join(unconditional)}]")
    for (index, dispatch, predicate), router in zip(routers, group.routers, strict=True):
        depth = 0
        if predicate is not None and router.match is not None:
            checks = [
                _inline_check(source, paths, rule, source.const(compile_match_rule(rule)))
                for rule in router.match.rules
            ]
            joiner = " and " if router.match.policy == "all" else " or "
            source.emit(0, f"if {joiner.join(checks)}:")
            depth = 1
        if index >= len(unconditional):
            source.emit(depth, f"matched.append({index})")
        target = source.const(dispatch)
        source.emit(depth, f"if {'fresh or ' if distinct else ''}{target} not in dispatches:")
        source.emit(depth + 1, f"dispatches.append({target})")
    record = ", ".join(source.const(v) for v in (group.id, group.version, len(routers)))
    source.emit(0, f"return {source.const(GroupHistory)}({record}, matched, {source.const(kinds)})")
    source.prelude = paths.render()
    function: GroupFn = source.build("<route group>")
    return function


_INLINE_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _inline_check(source: Source, paths: Paths, rule: MatchRule, reference: str) -> str:
    """An expression equal to the rule's predicate: the common value types inline, behind an
    exact type guard; any other value asks the reference predicate (``reference(view)``)."""
    op, expected = rule.operator, rule.value
    fallback = f"{reference}(view)"

    def guarded(test: str, expression: str) -> str:
        v = paths.value(rule.field)
        return f"({expression.format(v=v)} if {paths.guard(v, test)} else {fallback})"

    if op == "exists":
        v = paths.value(rule.field)
        present = f"({v} is not M and {v} is not None)"
        return present if expected is not False else f"(not {present})"
    if op == "eq" and _is_plain_text(expected):
        return f"({paths.value(rule.field)} == {source.const(expected)})"
    if op in _INLINE_ORDER:
        symbol = _INLINE_ORDER[op]
        if type(expected) in NUMBERS:
            return guarded("in NUM", f"{{v}} {symbol} {source.const(expected)}")
        want = as_number(expected)
        if want is not None:
            return guarded("in NUM", f"{{v}} {symbol} {source.const(want)}")
        if isinstance(expected, str):
            return guarded("is str", f"{{v}} {symbol} {source.const(expected)}")
        return fallback
    if op in ("eq", "neq"):
        negate = "not " if op == "neq" else ""
        if isinstance(expected, bool):
            return guarded("is bool", f"{negate}{{v}} is {source.const(expected)}")
        if type(expected) in NUMBERS:
            return guarded("in NUM", f"{negate}{{v}} == {source.const(expected)}")
        if type(expected) is str:
            return guarded("is str", f"{negate}{{v}} == {source.const(expected)}")
        return fallback
    if op in ("in", "nin") and all(type(o) is str for o in expected):
        member = "in" if op == "in" else "not in"
        return guarded("is str", f"{{v}} {member} {source.const(frozenset(expected))}")
    if op == "regex":
        search = source.const(compile_pattern(str(expected)).search)
        return guarded("is str", f"{search}({{v}})")
    return fallback


class RouteTable:
    """All route groups, compiled. Build a new table when route groups change."""

    def __init__(self, groups: Iterable[RouteGroup]) -> None:
        self._groups: dict[str, _CompiledGroup] = {g.id: _compile_group(g) for g in groups}

    def __contains__(self, group_id: object) -> bool:
        return group_id in self._groups

    def route(self, view: Mapping[str, Any], group_ids: Sequence[str]) -> RoutingResult:
        """Evaluate the asset's route groups in order. Dispatches are de-duplicated, so two
        groups that both store the event store it once."""
        dispatches: list[Dispatch] = []
        history: list[GroupHistory] = []
        fast = type(view) is dict
        groups = self._groups
        for group_id in group_ids:
            compiled = groups.get(group_id)
            if compiled is None:
                history.append(GroupHistory(group_id, 0, skipped="unknown route group"))
            elif fast:
                history.append(compiled.fast(view, dispatches))
            else:
                history.append(compiled.slow(view, dispatches))
        return RoutingResult(dispatches, history)
