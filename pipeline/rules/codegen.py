"""Python source generated once per business rule or route group, and exec'd at compile time.

Why: a compiled closure tree costs a Python call per node per event, about 100x an inline
``if``. One generated function per rule (or route group) turns the tree into straight-line
code. Inline code covers only the common, cheap cases, each behind an exact ``type(x) is``
guard, and hands everything else to the reference implementation (the operator functions, the
path getters), so the semantics stay those of the reference code by construction.

Safety: configuration never becomes source text. Paths, values, ids and helpers are bound in
the function's namespace under names the generator makes (``c0``, ``c1``...); :meth:`Source.build`
parses the finished source and refuses any string literal, any name it did not make and any
statement kind it does not write.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from eventray.pipeline.paths import MISSING, compile_path, parse_path

__all__ = ["NUMBERS", "Paths", "Source"]

NUMBERS = (int, float)
"""``type(v) in NUMBERS`` is the inline guard for "a real number": it excludes bools."""

_BUILTINS: dict[str, Any] = {
    "type": type, "dict": dict, "bool": bool, "float": float, "int": int, "str": str,
    "Exception": Exception,
}  # fmt: skip
# Attributes the generated code reads: methods of values it has type-checked (dicts, lists,
# floats, strings, compiled patterns) and fields of the rule engine's input event.
_ATTRIBUTES = frozenset({
    "get", "append", "is_integer", "startswith", "endswith", "search",
    "view", "event_tracker_id", "org_id", "path_key",
})  # fmt: skip
_NODES = frozenset({
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.If,
    ast.Try, ast.ExceptHandler, ast.Expr, ast.Pass, ast.Call, ast.Name, ast.Load, ast.Store,
    ast.Attribute, ast.Subscript, ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.IfExp,
    ast.BinOp, ast.Dict, ast.List, ast.And, ast.Or, ast.Not, ast.Is, ast.IsNot, ast.In,
    ast.NotIn, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Add, ast.Sub,
})  # fmt: skip


class Source:
    """One generated function: its namespace of constants, its locals and its lines.

    Layout: ``head`` (at the function's top level), then ``prelude`` and ``body`` indented by
    ``indent`` more levels (e.g. inside a ``try``), then ``tail`` (top level again).
    """

    def __init__(self, params: tuple[str, ...], *, indent: int = 0) -> None:
        self.params = params
        self.indent = indent
        self.namespace: dict[str, Any] = {"__builtins__": _BUILTINS, "M": MISSING, "NUM": NUMBERS}
        self.head: list[str] = []
        self.prelude: list[str] = []
        self.body: list[str] = []
        self.tail: list[str] = []
        self._bound: dict[int, str] = {}
        self._locals: set[str] = set(params)
        self._counter = 0

    def const(self, value: Any) -> str:
        """A namespace name bound to ``value`` (the same object gets the same name)."""
        name = self._bound.get(id(value))
        if name is None:
            name = f"c{len(self._bound)}"
            self.namespace[name] = value
            self._bound[id(value)] = name
        return name

    def declare(self, *names: str) -> None:
        """Fixed local names the generator uses (``matched``, ``state``...)."""
        self._locals.update(names)

    def local(self, prefix: str) -> str:
        """A fresh local variable name."""
        self._counter += 1
        name = f"{prefix}{self._counter}"
        self._locals.add(name)
        return name

    def emit(self, depth: int, line: str) -> None:
        self.body.append("    " * depth + line)

    def text(self) -> str:
        pad = "    " * (1 + self.indent)
        lines = [f"def run({', '.join(self.params)}):"]
        lines += ["    " + line for line in self.head]
        lines += [pad + line for line in self.prelude + self.body] or [pad + "pass"]
        lines += ["    " + line for line in self.tail]
        return "\n".join(lines) + "\n"

    def build(self, filename: str) -> Callable[..., Any]:
        """Check, compile and exec the function; raises ValueError if the source is unsafe."""
        source = self.text()
        tree = ast.parse(source, filename)
        self._check(tree)
        namespace = dict(self.namespace)
        exec(compile(tree, filename, "exec"), namespace)  # only names made here, no literals
        function: Callable[..., Any] = namespace["run"]
        function.__source__ = source  # type: ignore[attr-defined]  # for debugging and tests
        return function

    def _check(self, tree: ast.Module) -> None:
        """Only the statement and expression kinds the generators write, only the names they
        made, only the attributes they use, and no constants but small ints and None."""
        known = set(self.namespace) | self._locals | set(_BUILTINS) | {"run"}
        for node in ast.walk(tree):
            if type(node) not in _NODES:
                raise ValueError(f"generated source contains {type(node).__name__}")
            name = _name_of(node)
            if name is not None and name not in known:
                raise ValueError(f"generated source uses an unknown name {name[:40]!r}")
            if isinstance(node, ast.Attribute) and node.attr not in _ATTRIBUTES:
                raise ValueError(f"generated source reads an unknown attribute {node.attr[:40]!r}")
            elif isinstance(node, ast.Constant) and type(node.value) not in (int, type(None)):
                raise ValueError(f"generated source contains a literal: {node.value!r:.40}")
            elif isinstance(node, ast.FunctionDef) and node.name != "run":
                raise ValueError("generated source defines an unknown function")


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, ast.ExceptHandler):
        return node.name or "?"
    return None


_GUARDS = frozenset({"in NUM", "is str", "is bool"})


class _Read:
    """One step of a plain-key path: ``parent.get(key)``; a leaf also has its fallback."""

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        self.fallback: str | None = None  # set if the path ends here
        self.children: dict[str, _Read] = {}


class Paths:
    """Reads of event paths, each done once per call, before the code that uses them.

    Reading a path has no side effects and never raises, so hoisting it out of a condition
    changes nothing but its cost; the same holds for a type test of what was read. The
    caller guarantees the root is a ``dict``. Plain-key paths are read inline with
    ``dict.get`` through values that are exactly dicts (one ``type`` test per parent); any
    other shape (a list index, a numeric key, a non-dict on the way) calls the path's
    reference getter, which decides exactly as it always has.
    """

    def __init__(self, source: Source, root: str) -> None:
        self._source = source
        self._root = root
        self._tree: dict[str, _Read] = {}
        self._direct: dict[str, str] = {}  # paths read by their getter
        self._direct_lines: list[str] = []
        self._guards: dict[tuple[str, str], str] = {}

    def value(self, path: str) -> str:
        """The local holding the value at ``path`` (MISSING if absent)."""
        parts = parse_path(path)
        if not all(isinstance(p, str) and not p.isdigit() for p in parts):
            name = self._direct.get(path)
            if name is None:
                name = self._direct[path] = self._source.local("v")
                self._direct_lines.append(f"{name} = {self._getter(path)}")
            return name
        level, read = self._tree, None
        for part in parts:
            assert isinstance(part, str)
            read = level.get(part)
            if read is None:
                read = level[part] = _Read(self._source.local("v"), self._source.const(part))
            level = read.children
        assert read is not None
        if read.fallback is None:
            read.fallback = self._getter(path)
        return read.name

    def _getter(self, path: str) -> str:
        return f"{self._source.const(compile_path(path))}({self._root})"

    def guard(self, value: str, test: str) -> str:
        """A local holding ``type(value) <test>`` for a value from :meth:`value`."""
        assert test in _GUARDS
        name = self._guards.get((value, test))
        if name is None:
            name = self._guards[(value, test)] = self._source.local("t")
        return name

    def render(self) -> list[str]:
        """The reads and type tests, in dependency order (call once, after the last use)."""
        lines = list(self._direct_lines)
        for read in self._tree.values():
            lines.append(f"{read.name} = {self._root}.get({read.key}, M)")
            lines += self._below(read, 0)
        lines += [f"{name} = type({value}) {test}" for (value, test), name in self._guards.items()]
        return lines

    def _below(self, parent: _Read, depth: int) -> list[str]:
        if not parent.children:
            return []
        pad = "    " * (depth + 1)
        inside = []
        for read in parent.children.values():
            inside.append(f"{pad}{read.name} = {parent.name}.get({read.key}, M)")
            inside += self._below(read, depth + 1)
        outside = [f"{pad}{name} = {fallback}" for name, fallback in self._fallbacks(parent)]
        return ["    " * depth + f"if type({parent.name}) is dict:", *inside,
                "    " * depth + "else:", *outside]  # fmt: skip

    def _fallbacks(self, parent: _Read) -> list[tuple[str, str]]:
        """Every path ending below ``parent``: read by its getter when ``parent`` is no dict."""
        found = []
        for read in parent.children.values():
            if read.fallback is not None:
                found.append((read.name, read.fallback))
            found += self._fallbacks(read)
        return found
