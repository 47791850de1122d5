"""WHERE pieces every reader of stored rows shares: which organizations, and a time range.

Events, logs and the DLQ are read with the same organization semantics (one organization, or
its whole subtree by pathKey prefix) and the same half-open time range; one definition keeps
them from drifting apart. Each helper appends SQL text with ``{name:Type}`` placeholders to
``where`` and the values to ``params``: nothing a user typed ever becomes SQL text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from eventray.pipeline.storage.rows import format_ts

__all__ = ["DATE", "organizations", "subtree", "time_range"]

DATE: Final = "DateTime64(3, 'UTC')"
"""The parameter type of ``created`` (and every other time column)."""


def subtree(
    where: list[str], params: dict[str, Any], path_key: str, *, name: str = "path_key",
    column: str = "path_key",
) -> None:  # fmt: skip
    """``column`` is ``path_key`` or below it."""
    where.append(
        f"({column} = {{{name}:String}} OR startsWith({column}, {{{name}_prefix:String}}))"
    )
    params[name] = path_key
    params[f"{name}_prefix"] = path_key + "/"


def organizations(
    where: list[str], params: dict[str, Any], *, include_children: bool, org_id: str | None,
    path_key: str | None,
) -> None:  # fmt: skip
    """The subtree of ``path_key`` (``include_children``), or the one organization ``org_id``
    (and at ``path_key`` when the caller gives one); nothing when neither is asked."""
    if include_children:
        subtree(where, params, path_key or "")
    elif org_id:
        where.append("org_id = {org_id:String}")
        params["org_id"] = org_id
        if path_key:
            where.append("path_key = {path_key:String}")
            params["path_key"] = path_key


def time_range(
    where: list[str], params: dict[str, Any], since: datetime | int | None,
    until: datetime | int | None,
) -> None:  # fmt: skip
    """``since <= created < until`` (either bound optional; datetimes or epoch ms)."""
    if since is not None:
        where.append(f"created >= {{since:{DATE}}}")
        params["since"] = format_ts(since)
    if until is not None:
        where.append(f"created < {{until:{DATE}}}")
        params["until"] = format_ts(until)
