"""How long stored rows live: days per table, with per-organization overrides.

Every row carries its ``retention_days`` and the tables' TTL deletes it that many days after
its ``created`` (see :mod:`pipeline.storage.schema`). Deciding the number when the row is
written, rather than in the TTL expression, lets each organization have its own retention
without one table per tenant, and a changed policy applies to new rows without rewriting old
ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from eventray.pipeline.storage.schema import TABLES

__all__ = ["DEFAULT_DAYS", "RetentionPolicy"]

# Events are the product; logs are for tracing recent behaviour; the DLQ must outlive the time
# it takes someone to notice and replay it.
DEFAULT_DAYS: Mapping[str, int] = MappingProxyType(
    {
        "events": 365,
        "events_raw": 30,
        "logs_script": 30,
        "logs_router": 30,
        "logs_rule": 90,
        "logs_capture": 365,
        "logs_trigger": 90,
        "dlq": 90,
        "dlq_redrive": 90,
    }
)

_MAX_DAYS = 65535  # retention_days is a UInt16


def _check(days: int, where: str) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= _MAX_DAYS:
        raise ValueError(f"{where}: retention must be 1..{_MAX_DAYS} days, got {days!r}")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Retention in days per table, with optional per-organization overrides.

    Args:
        defaults: days per table; tables not listed keep :data:`DEFAULT_DAYS`.
        overrides: ``{org_id: {table: days}}``; an override applies to that organization only
            (not to its children: retention is a contract with one tenant).
    """

    defaults: Mapping[str, int] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    _table: dict[str, int] = field(init=False, repr=False, compare=False)
    _org: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = dict(DEFAULT_DAYS)
        for name, days in self.defaults.items():
            if name not in TABLES:
                raise ValueError(f"retention defaults: unknown table {name!r}")
            _check(days, f"retention defaults[{name}]")
            table[name] = days
        org: dict[tuple[str, str], int] = {}
        for org_id, per_table in self.overrides.items():
            for name, days in per_table.items():
                if name not in TABLES:
                    raise ValueError(f"retention overrides[{org_id}]: unknown table {name!r}")
                _check(days, f"retention overrides[{org_id}][{name}]")
                org[(org_id, name)] = days
        # Flattened once: days() runs for every stored row.
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_org", org)

    def with_overrides(self, overrides: Mapping[str, Mapping[str, int]]) -> RetentionPolicy:
        """This policy with ``overrides`` ({org: {table: days}}) over its own, table by table
        (what organizations' ``retentionDays`` give, inherited down the tree, wins over the
        ``store.org_retention_days`` setting)."""
        merged = {org: dict(tables) for org, tables in self.overrides.items()}
        for org, tables in overrides.items():
            merged.setdefault(org, {}).update(tables)
        return RetentionPolicy(defaults=self.defaults, overrides=merged)

    def days(self, org_id: str, table: str) -> int:
        """Days a row of ``table`` written for ``org_id`` is kept."""
        found = self._org.get((org_id, table))
        return found if found is not None else self._table[table]
