"""Reading entities from YAML/JSON files and folders.

A file holds one entity, a list of entities, or (YAML) several documents. ``kind`` selects the
model. Script fields of an AssetTemplate may be written ``{file: relative/path.js}`` so that a
device codec can be kept byte-for-byte as its vendor ships it. Every problem is collected as a
:class:`ConfigIssue` with file, field path and reason; nothing is raised half-way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from eventray.pipeline.errors import ConfigError, ConfigIssue
from eventray.pipeline.models import ENTITY_KINDS, Entity

__all__ = [
    "SCRIPT_FIELDS",
    "DocumentSource",
    "checked_documents",
    "entity_from_dict",
    "issue_at",
    "read_documents",
    "read_entities",
]

SCRIPT_FIELDS = ("scriptProcessor", "scriptValidator", "scriptConversion", "scriptTest")
_SUFFIXES = (".yaml", ".yml", ".json")


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
            )
        else:
            found.append(path)
    return found


class DocumentSource(str):
    """The file an entity document came from (the string value, as every caller that keeps or
    prints a source expects), and where in it the document and each of its fields are, so an
    issue about a field points at that field's line (:meth:`issue`)."""

    line: int
    column: int
    fields: dict[str, tuple[int, int]]

    def __new__(
        cls, file: str, line: int, column: int, fields: dict[str, tuple[int, int]]
    ) -> DocumentSource:
        self = super().__new__(cls, file)
        self.line, self.column, self.fields = line, column, fields
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return str, (str(self),)  # a pickled copy (into a Ray actor) is the plain file name

    def mark(self, path: str) -> tuple[int, int]:
        """``(line, column)`` of the field at ``path`` (``when.items[0].value``), of its
        nearest enclosing field, or of the document."""
        while path:
            if path in self.fields:
                return self.fields[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.line, self.column


def issue_at(
    source: str, path: str, reason: str, kind: str = "", entity_id: str = ""
) -> ConfigIssue:
    """A :class:`ConfigIssue`, with the field's line and column when ``source`` knows them."""
    line, column = source.mark(path) if isinstance(source, DocumentSource) else (0, 0)
    return ConfigIssue(str(source), path, reason, kind, entity_id, line, column)


def _field_marks(node: yaml.Node, prefix: str, out: dict[str, tuple[int, int]]) -> None:
    """``field path -> (line, column)`` of each key (or list item) under ``node``."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                out[path] = (key.start_mark.line + 1, key.start_mark.column + 1)
                _field_marks(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = f"{prefix}[{index}]"
            out[path] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _field_marks(item, path, out)


def _yaml_documents(text: str, file: str) -> list[tuple[Any, list[str]]]:
    """Each document of a YAML stream, with the source of each entity in it (one for a
    mapping, one per item for a list)."""
    loader = yaml.SafeLoader(text)
    out: list[tuple[Any, list[str]]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            doc = loader.construct_document(node)
            items = node.value if isinstance(node, yaml.SequenceNode) else [node]
            sources: list[str] = []
            for item in items:
                fields: dict[str, tuple[int, int]] = {}
                _field_marks(item, "", fields)
                mark = item.start_mark
                sources.append(DocumentSource(file, mark.line + 1, mark.column + 1, fields))
            out.append((doc, sources))
    finally:
        loader.dispose()
    return out


def _parse_problem(file: str, exc: Exception) -> ConfigIssue:
    """A syntax error at its line and column, and what is wrong there."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        context = f" ({exc.context})" if exc.context else ""
        mark = exc.problem_mark
        return ConfigIssue(file, "", f"YAML syntax: {exc.problem}{context}",
                           line=mark.line + 1, column=mark.column + 1)  # fmt: skip
    if isinstance(exc, orjson.JSONDecodeError):
        return ConfigIssue(file, "", f"JSON syntax: {exc.msg}", line=exc.lineno, column=exc.colno)
    return ConfigIssue(file, "", f"cannot parse: {exc}".replace("\n", " "))


def read_documents(
    paths: Iterable[Path], issues: list[ConfigIssue]
) -> list[tuple[str, dict[str, Any]]]:
    """Every entity document under ``paths`` with where it came from: ``file:line:column`` of
    the file, a :class:`DocumentSource` that knows the document's lines when it is YAML."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for file in _files(paths):
        source = str(file)
        try:
            text = file.read_text()
            if file.suffix == ".json":
                loaded: list[tuple[Any, list[str]]] = [(orjson.loads(text), [])]
            else:
                loaded = _yaml_documents(text, source)
        except FileNotFoundError:
            issues.append(ConfigIssue(source, "", "no such file"))
            continue
        except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
            issues.append(_parse_problem(source, exc))
            continue
        for doc, sources in loaded:
            items = doc if isinstance(doc, list) else [doc]
            for index, item in enumerate(items):
                where = sources[index] if index < len(sources) else source
                if item is None:
                    continue
                if not isinstance(item, dict):
                    at = f"[{index}]" if isinstance(doc, list) else ""
                    issues.append(issue_at(where, at, "an entity must be a mapping"))
                    continue
                inlined = _inline_script_files(item, file, issues)
                if inlined is not None:  # else the missing script file was reported
                    docs.append((where, inlined))
    return docs


def _inline_script_files(
    doc: dict[str, Any], file: Path, issues: list[ConfigIssue]
) -> dict[str, Any] | None:
    if doc.get("kind") != "AssetTemplate":
        return doc
    doc = dict(doc)
    for name in SCRIPT_FIELDS:
        value = doc.get(name)
        if isinstance(value, dict) and set(value) == {"file"}:
            target = (file.parent / str(value["file"])).resolve()
            try:
                doc[name] = target.read_text()
            except OSError as exc:
                issues.append(ConfigIssue(str(file), name, f"cannot read script file: {exc}",
                                          "AssetTemplate", str(doc.get("id", ""))))  # fmt: skip
                return None
    return doc


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """pydantic's error location as users wrote the document: ``when.items[0].data.operator``
    (union tags that pydantic inserts, like ``condition``, are dropped)."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if (
            isinstance(node, dict)
            and part not in node
            and part in (node.get("type"), node.get("kind"))
        ):
            continue  # a discriminator tag, not a field
        if isinstance(node, dict) and "[" not in part and "function-" not in part:
            out += f".{part}" if out else part
            node = node.get(part)
        elif not part.startswith(("function-", "union[", "tagged-union[")):
            out += f".{part}" if out else part
            node = None
    return out


def entity_from_dict(source: str, doc: dict[str, Any], issues: list[ConfigIssue]) -> Entity | None:
    """Validate one document into its entity, or record why not."""
    kind = doc.get("kind")
    entity_id = str(doc.get("id", ""))
    model = ENTITY_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        issues.append(issue_at(source, "kind", f"unknown kind {kind!r}; expected one of "
                                  f"{', '.join(ENTITY_KINDS)}", str(kind or ""), entity_id))  # fmt: skip
        return None
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        for error in exc.errors():
            reason = error["msg"].removeprefix("Value error, ")
            path = _field_path(error["loc"], doc)
            issues.append(issue_at(source, path, reason, str(kind), entity_id))
        return None


def read_entities(paths: Iterable[Path], issues: list[ConfigIssue]) -> list[tuple[str, Entity]]:
    """Read and validate every entity under ``paths``."""
    out: list[tuple[str, Entity]] = []
    for source, doc in read_documents(paths, issues):
        entity = entity_from_dict(source, doc, issues)
        if entity is not None:
            out.append((source, entity))
    return out


def checked_documents(
    documents: Sequence[Mapping[str, Any]], *, reserved: tuple[str, ...] = ()
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(kind, id, copy)`` of each document a config store is asked to keep.

    Refuses the whole batch on any problem, with every problem listed: not a mapping, ``kind``
    or ``id`` missing, a ``reserved`` field (one the store uses itself), or a value JSON cannot
    hold. The copy goes through JSON, so what a store keeps is exactly what it will read back
    (a YAML date would otherwise come back as a string from one store and a datetime from
    another).
    """
    issues: list[ConfigIssue] = []
    out: list[tuple[str, str, dict[str, Any]]] = []
    for index, doc in enumerate(documents):
        source = f"config store put, document [{index}]"
        if not isinstance(doc, Mapping):
            issues.append(ConfigIssue(source, "", "an entity must be a mapping"))
            continue
        kind, entity_id = doc.get("kind"), doc.get("id")
        problems = [
            (name, "must be a non-empty string")
            for name, value in (("kind", kind), ("id", entity_id))
            if not isinstance(value, str) or not value
        ]
        problems += [(name, "is reserved by the store") for name in reserved if name in doc]
        copy: dict[str, Any] = {}
        try:
            copy = orjson.loads(orjson.dumps(doc, option=orjson.OPT_PASSTHROUGH_DATETIME))
        except orjson.JSONEncodeError as exc:
            problems.append(("", f"not JSON-compatible: {exc}"))
        for name, reason in problems:
            issues.append(ConfigIssue(source, name, reason, str(kind or ""), str(entity_id or "")))
        if not problems:
            out.append((str(kind), str(entity_id), copy))
    if issues:
        raise ConfigError(issues)
    return out
