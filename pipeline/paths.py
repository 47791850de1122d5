"""Dot paths into events (``data.readings[0].value``), compiled once into getters."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["MISSING", "Getter", "compile_path", "parse_path"]


class _Missing:
    """Marks an absent field (distinct from an explicit ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()
Getter = Callable[[Any], Any]
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``a.b[0].c`` -> ``("a", "b", 0, "c")``; a purely numeric segment indexes lists too.

    A key must be followed by ``.``, ``[`` or the end; an index by ``.``, ``[`` or the end;
    a path may not start or end with a separator.
    """
    if not path or path != path.strip() or path[0] == "." or path[-1] == ".":
        raise ValueError(f"invalid path {path!r}")
    parts: list[str | int] = []
    position = 0
    for match in _TOKEN.finditer(path):
        gap = path[position : match.start()]
        if match.group(2) is not None:  # [n]: directly after the previous token
            if gap or not parts:
                raise ValueError(f"invalid path {path!r} near {gap or '['!r}")
        elif parts and gap != ".":  # a key after a key or an index needs a dot
            raise ValueError(f"invalid path {path!r} near {gap or match.group(1)!r}")
        elif not parts and gap:
            raise ValueError(f"invalid path {path!r} near {gap!r}")
        parts.append(int(match.group(2)) if match.group(2) is not None else match.group(1))
        position = match.end()
    if position != len(path) or not parts:
        raise ValueError(f"invalid path {path!r}")
    return tuple(parts)


def compile_path(path: str) -> Getter:
    """A function returning the value at ``path``, or :data:`MISSING`."""
    parts = parse_path(path)

    def get(obj: Any) -> Any:
        for part in parts:
            if isinstance(obj, dict):
                if isinstance(part, int):
                    part = str(part)
                if part not in obj:
                    return MISSING
                obj = obj[part]
            elif isinstance(obj, list):
                if isinstance(part, str):
                    if not part.isdigit():
                        return MISSING
                    part = int(part)
                if part >= len(obj):
                    return MISSING
                obj = obj[part]
            else:
                return MISSING
        return obj

    if all(isinstance(p, str) and not p.isdigit() for p in parts):
        return _dict_path(parts) or get
    return get


def _dict_path(parts: tuple[str | int, ...]) -> Getter | None:
    """Fast getters for the common case, paths of plain keys: indexing raises on anything that
    is not a dict on the way (a list, a string, None), which is exactly "missing"."""
    if len(parts) == 1:
        (a,) = parts

        def get1(obj: Any) -> Any:
            return obj.get(a, MISSING) if type(obj) is dict else MISSING

        return get1
    if len(parts) == 2:
        a, b = parts

        def get2(obj: Any) -> Any:
            try:
                inner = obj[a]
                return inner[b] if type(inner) is dict else MISSING
            except (KeyError, TypeError):
                return MISSING

        return get2
    if len(parts) == 3:
        a, b, c = parts

        def get3(obj: Any) -> Any:
            try:
                inner = obj[a][b]
                return inner[c] if type(inner) is dict else MISSING
            except (KeyError, TypeError):
                return MISSING

        return get3
    return None
