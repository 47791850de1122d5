"""Secrets in entity documents are write-only through the management API.

A device's MQTT password (stored as its bcrypt hash), a data source's API key or JWT secret,
and a trigger's broker or SMTP password are shown as :data:`REDACTED` wherever the API returns
a document (reads, lists, the history's before and after and its diff). A document written
back with :data:`REDACTED` in such a field keeps the stored value, so what a client read can be
edited and sent back whole; a new entity must give the value itself.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["REDACTED", "SECRET_PATHS", "redact", "redact_diff", "unredact"]

REDACTED: Final = "<redacted>"

SECRET_PATHS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "Asset": (("protocol", "mqtt", "password"),),
    "DataSource": (("auth", "key"), ("auth", "secret")),
    "Trigger": (
        ("config", "email", "password"),
        ("config", "mqtt", "password"),
        ("config", "rabbitmq", "password"),
    ),
}


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, Mapping) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def redact(kind: str, doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``doc`` with its secrets replaced by :data:`REDACTED`."""
    if doc is None:
        return None
    paths = [p for p in SECRET_PATHS.get(kind, ()) if isinstance(_get(doc, p), str)]
    if not paths:
        return dict(doc)
    out = copy.deepcopy(dict(doc))
    for path in paths:
        _set(out, path, REDACTED)
    return out


def unredact(kind: str, doc: dict[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """``doc`` with every :data:`REDACTED` secret replaced by the stored one (left as it is
    when nothing is stored there: validation then refuses it, or it is taken as written)."""
    paths = [p for p in SECRET_PATHS.get(kind, ()) if _get(doc, p) == REDACTED]
    if not paths or stored is None:
        return doc
    out = copy.deepcopy(doc)
    for path in paths:
        value = _get(stored, path)
        if isinstance(value, str):
            _set(out, path, value)
    return out


def redact_diff(kind: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Diff entries with the values of secret fields (and of objects holding them) hidden."""
    secret = [".".join(p) for p in SECRET_PATHS.get(kind, ())]
    out = []
    for entry in entries:
        path = str(entry.get("path", ""))
        if any(s == path or s.startswith(path + ".") or not path for s in secret):
            entry = dict(entry)
            for side in ("from", "to"):
                if side in entry:
                    value = entry[side]
                    if path in secret:
                        entry[side] = REDACTED
                    elif isinstance(value, dict):
                        entry[side] = _redact_at(kind, path, value)
        out.append(entry)
    return out


def _redact_at(kind: str, prefix: str, value: dict[str, Any]) -> dict[str, Any]:
    """Redact a sub-document that sits at ``prefix`` of a ``kind`` document."""
    if not prefix:
        return redact(kind, value) or {}
    parts = tuple(prefix.split("."))
    wrapper: dict[str, Any] = {}
    node = wrapper
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    redacted = redact(kind, wrapper) or {}
    result: Any = _get(redacted, parts)
    return result if isinstance(result, dict) else value
