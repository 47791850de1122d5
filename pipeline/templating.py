"""``{{path}}`` placeholders in messages and trigger configs.

Roots: ``event`` (the event view), ``state`` (rule variables), ``params`` (business-rule
parameters), ``metadata`` (``event.metadata``, which includes ``assetId``) and ``secrets``.
Secrets are resolved only when a provider is given: the rule engine renders without one, so a
secret never lands in a stored log; the trigger dispatcher renders with one right before
sending.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from eventray.pipeline.errors import TemplateRenderError
from eventray.pipeline.paths import MISSING, compile_path
from eventray.pipeline.ports import SecretsProvider
from eventray.pipeline.rules.values import iso

__all__ = ["Renderer", "compile_template", "format_value", "render"]

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_ROOTS = ("event", "state", "params", "metadata", "secrets")
Renderer = Callable[[Mapping[str, Any], SecretsProvider | None], str]


def format_value(value: Any) -> str:
    """Text for a value, as JavaScript would print it: 80.0 -> "80", true -> "true"."""
    if value is MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(_js_numbers(value), default=str).decode()
    return str(value)


def _js_numbers(value: Any) -> Any:
    """Integral floats as ints, recursively, so {"t": 80.0} renders as JavaScript would."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


@lru_cache(maxsize=4096)
def compile_template(text: str) -> Renderer:
    """Compile ``text`` once; the renderer takes a context with the roots above."""
    if "{{" not in text:
        return lambda context, secrets: text
    pieces: list[str | tuple[str, Callable[[Any], Any], str]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        pieces.append(text[position : match.start()])
        path = match.group(1)
        root = path.split(".", 1)[0].split("[", 1)[0]
        if root not in _ROOTS:
            raise TemplateRenderError(
                f"placeholder {{{{{path}}}}} must start with one of {', '.join(_ROOTS)}"
            )
        try:
            getter = compile_path(path)
        except ValueError as exc:
            raise TemplateRenderError(f"placeholder {{{{{path}}}}}: {exc}") from exc
        pieces.append((path, getter, match.group(0)))
        position = match.end()
    pieces.append(text[position:])
    if "{{" in "".join(p for p in pieces if isinstance(p, str)):
        raise TemplateRenderError(f"unbalanced '{{{{' in {text!r}")

    def renderer(context: Mapping[str, Any], secrets: SecretsProvider | None) -> str:
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            path, getter, raw = piece
            if path.startswith("secrets."):
                if secrets is None:
                    out.append(raw)  # resolved at delivery, never stored
                    continue
                value = secrets.secret(path[len("secrets.") :])
                if value is None:
                    raise TemplateRenderError(f"unknown secret {path[len('secrets.') :]!r}")
                out.append(value)
                continue
            out.append(format_value(getter(context)))
        return "".join(out)

    return renderer


def render(text: str, context: Mapping[str, Any], secrets: SecretsProvider | None = None) -> str:
    """Render ``text`` once (compiled templates are cached)."""
    return compile_template(text)(context, secrets)
