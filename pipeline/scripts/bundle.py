"""Turning user scripts into a QuickJS program: wrapping, codec detection, syntax checking.

A *bundle* is the prepared, verified form of one template (or one stand-alone script): a list
of stage sources, each already wrapped so that it can be evaluated into the runtime of
``js/prelude.js``. Bundles are plain data, so the script cache can keep them on disk (L1) and
in a blob store (L2). The ``quickjs`` binding does not expose QuickJS bytecode serialisation,
so the compiled functions themselves live only in warm contexts (L0); see ``cache.py``.

Each stage is evaluated separately with its wrapper on the same line as the script's first
line, so a line QuickJS reports is the line in the user's script. Two static checks make the
per-event path cheaper without changing what a script sees: a codec that provably keeps no
state loads once instead of per uplink (``codec_reuse.py``), and literal-only ``$mv`` schema
expressions are built once per context (``mv_hoist.py``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import orjson

from eventray.pipeline.models.template import AssetTemplate
from eventray.pipeline.scripts.codec_reuse import mentions_this, reusable_codec
from eventray.pipeline.scripts.mv_hoist import HOIST_ACCESSOR, hoist_schemas

__all__ = [
    "ENGINE_VERSION",
    "Bundle",
    "CodecStyle",
    "StageSource",
    "bundle_for_script",
    "bundle_for_template",
    "detect_codec",
    "template_bundle_key",
]

# Bump when the prelude or the wrappers change: it is part of every cache key.
ENGINE_VERSION = "5"

CodecStyle = Literal["decodeUplink", "Decoder", "Decode"]
_CODEC_STYLES: tuple[CodecStyle, ...] = ("decodeUplink", "Decode", "Decoder")
_VAR_CODEC = re.compile(r"\b(?:var|let|const)\s+(decodeUplink|Decoder|Decode)\s*=")
_FUNCTION_CODEC = re.compile(r"\bfunction\s+(decodeUplink|Decoder|Decode)\s*\(")


@dataclass(frozen=True, slots=True)
class StageSource:
    """One stage: its name (decode/validate/transform), whether it is a codec, and its JS."""

    name: str
    program: str
    codec_style: CodecStyle | None = None


@dataclass(frozen=True, slots=True)
class Bundle:
    """A prepared script program, keyed by what it was built from."""

    key: str
    stages: tuple[StageSource, ...]
    standard_event: bool = False
    engine_version: str = ENGINE_VERSION
    meta: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Bundle:
        data = orjson.loads(raw)
        stages = tuple(StageSource(**stage) for stage in data.pop("stages"))
        return cls(stages=stages, **data)


def detect_codec(source: str) -> CodecStyle | None:
    """The device-codec style a script defines at its top level, if any.

    Function declarations are found by their text; ``var/let/const NAME =`` forms by the same
    pattern. ``decodeUplink`` wins over ``Decode`` over ``Decoder`` when a codec ships several
    (many TTN codecs keep a legacy ``Decoder`` wrapper beside ``decodeUplink``).
    """
    names = set(_FUNCTION_CODEC.findall(source)) | set(_VAR_CODEC.findall(source))
    for style in _CODEC_STYLES:
        if style in names:
            return style
    return None


_DECLARES_RESULT = re.compile(r"\b(?:let|const|var)\s+result\b|\bfunction\s+result\b")


def _wrap_script(name: str, source: str) -> str:
    # The body runs as a function per event, so its declarations are local to that event.
    # `result` is declared for the script unless it declares `result` itself (a second
    # `let result` in the same scope would be a SyntaxError); `typeof` keeps a result declared
    # only in a nested block from throwing. A `return value` in the body also sets the result.
    # The hoisted schema expressions come after the user's last line (their own lines do not
    # shift the script's); the stage reaches them through its accessor parameter.
    body, hoisted = hoist_schemas(source)
    if _DECLARES_RESULT.search(source):
        function = (
            f"function (payload) {{{body}\n;"
            "return typeof result === 'undefined' ? undefined : result; }"
        )
    else:
        # `result` as a parameter, not a `var`, so a leading "use strict" stays a directive.
        function = f"function (payload, result) {{{body}\n;return result; }}"
    makers = ", ".join(f"function __mvx() {{ return ({text}\n); }}" for text in hoisted)
    accessor = HOIST_ACCESSOR if hoisted else ""
    return (
        f"__eventray.stage({name!r}, function ({accessor}) {{ return {function}; }}, [{makers}]);"
    )


def _wrap_codec(name: str, source: str, style: CodecStyle, strict: bool) -> str:
    # The factory runs once per uplink, so the codec's top-level state is fresh every time,
    # unless the codec provably keeps none (then once per context).
    exports = ", ".join(
        f"{s}: typeof {s} === 'function' ? {s} : undefined"
        for s in ("decodeUplink", "Decoder", "Decode")
    )
    flags = ", ".join(
        "true" if flag else "false"
        for flag in (strict, reusable_codec(source), mentions_this(source))
    )
    return (
        f"__eventray.codec({name!r}, {style!r}, {flags}, function () {{"
        f"{source}\n;return {{ {exports} }}; }});"
    )


def _stage(name: str, source: str, *, allow_codec: bool, strict: bool) -> StageSource:
    style = detect_codec(source) if allow_codec else None
    if style is not None:
        return StageSource(
            name=name, program=_wrap_codec(name, source, style, strict), codec_style=style
        )
    return StageSource(name=name, program=_wrap_script(name, source))


def _key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def template_bundle_key(template: AssetTemplate) -> str:
    """The cache key of a template's bundle: template id, content hash, engine version."""
    return f"{template.id}/{template.content_hash}-e{ENGINE_VERSION}"


def bundle_for_template(template: AssetTemplate) -> Bundle:
    """decode (script or codec) -> validate -> transform, checked to yield a Standard Event."""
    stages: list[StageSource] = []
    for name, source in (
        ("decode", template.script_processor),
        ("validate", template.script_validator),
        ("transform", template.script_conversion),
    ):
        if source is not None and source.strip():
            stages.append(_stage(name, source, allow_codec=name == "decode", strict=True))
    return Bundle(
        key=template_bundle_key(template),
        stages=tuple(stages),
        standard_event=True,
        meta={"templateId": template.id},
    )


def bundle_for_script(source: str, *, stage: str = "decode") -> Bundle:
    """A stand-alone script for ``eventray scripts run``: a codec returns its output as is."""
    only = _stage(stage, source, allow_codec=True, strict=False)
    return Bundle(key=f"script/{_key(stage, source)}-e{ENGINE_VERSION}", stages=(only,))
