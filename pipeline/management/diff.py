"""The difference between two versions of a document, as the history shows it."""

from __future__ import annotations

from typing import Any

__all__ = ["diff"]


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Each changed field of ``before`` -> ``after`` as ``{op, path, from?, to?}`` with ``op``
    ``add``, ``remove`` or ``replace`` and the field path written as in validation errors
    (``routers[0].match.policy``). Objects are compared field by field; lists of the same
    length element by element, lists whose length changed are replaced whole (an insertion
    would otherwise read as a change of every later element). A whole document created or
    deleted is one entry at path ``""``.
    """
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[dict[str, Any]] = []
        for key in before:
            if key not in after:
                out.append({"op": "remove", "path": _join(path, key), "from": before[key]})
            else:
                out.extend(diff(before[key], after[key], _join(path, key)))
        for key in after:
            if key not in before:
                out.append({"op": "add", "path": _join(path, key), "to": after[key]})
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            entry
            for index, (old, new) in enumerate(zip(before, after, strict=True))
            for entry in diff(old, new, _join(path, index))
        ]
    if before is None:
        return [{"op": "add", "path": path, "to": after}]
    if after is None:
        return [{"op": "remove", "path": path, "from": before}]
    return [{"op": "replace", "path": path, "from": before, "to": after}]
