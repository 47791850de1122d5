"""Hoisting ``$mv`` schema expressions out of the per-event path.

A validate stage typically builds its schema in its body (``const schema = $mv.object({...})``),
so the schema was built again for every event: a dozen allocations and builder calls before
the first check. An expression made only of ``$mv`` builder calls and literals yields the same
schema every time, so the bundle replaces it by ``__mvh(i)``: the runtime evaluates the original
text once per context, freezes the tree, and hands each evaluation a fresh object inheriting
from it (see ``$mv`` in the prelude), so a later ``.required()`` on it still changes only that
event's schema.

Nothing is hoisted unless every bare ``$mv`` in the script is followed by ``.`` (the script never
binds its own ``$mv``, and the global one is read-only), and the script never uses ``eval`` or
``with`` (which could rebind it) nor the accessor's name. The replacement keeps the number of
line breaks, so line numbers in errors stay those of the user's script.

What differs is only what the documented API does not show: the fields of a hoisted schema are
inherited rather than own (``Object.keys(schema)`` is empty), and its shared tree is frozen, so
code that reaches into the internals (``schema.__inner.x.required()``) gets a TypeError instead
of changing the schema of every later event.
"""

from __future__ import annotations

from eventray.pipeline.scripts.jslex import LexError, Token, tokenize

__all__ = ["HOIST_ACCESSOR", "hoist_schemas"]

HOIST_ACCESSOR = "__mvh"

_BUILDERS = frozenset(("object", "string", "number", "boolean", "date", "array", "any"))
_MODIFIERS = frozenset(("required", "optional", "min", "max", "integer", "email", "pattern"))
_LITERAL_NAMES = frozenset(("true", "false", "null"))


def hoist_schemas(source: str) -> tuple[str, list[str]]:
    """``source`` with each literal-only ``$mv`` expression replaced by ``__mvh(i)``, and the
    expressions' original texts (index ``i``). Unchanged when nothing can be hoisted safely."""
    if "$mv" not in source:
        return source, []
    try:
        tokens = tokenize(source)
    except LexError:
        return source, []
    if not _safe(tokens):
        return source, []
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if _bare_mv(tokens, i) and (i == 0 or tokens[i - 1].text != "new"):
            end = _Chain(tokens).parse(i)
            if end is not None:
                spans.append((tokens[i].start, tokens[end - 1].end))
                i = end
                continue
        i += 1
    if not spans:
        return source, []
    pieces: list[str] = []
    hoisted: list[str] = []
    at = 0
    for start, end in spans:
        text = source[start:end]
        pieces.append(source[at:start])
        pieces.append(f"{HOIST_ACCESSOR}({len(hoisted)})" + "\n" * text.count("\n"))
        hoisted.append(text)
        at = end
    pieces.append(source[at:])
    return "".join(pieces), hoisted


def _bare_mv(tokens: list[Token], i: int) -> bool:
    return tokens[i].text == "$mv" and (i == 0 or tokens[i - 1].text not in (".", "?."))


def _mode_free(literal: Token) -> bool:
    """A literal that means the same in strict and sloppy code, so that the hoisted copy (in
    code of its own) reads as it did in the script: no legacy octal number (``010``) and no
    escape at all in a string (``"\\1"`` is octal in sloppy code; an escaped ``__proto__`` key
    would set the prototype)."""
    if literal.kind == "num":
        return not (len(literal.text) > 1 and literal.text[0] == "0" and literal.text[1].isdigit())
    return "\\" not in literal.text


def _safe(tokens: list[Token]) -> bool:
    for i, token in enumerate(tokens):
        if token.kind != "name":
            continue
        if token.text in ("eval", "with", HOIST_ACCESSOR):
            return False
        if _bare_mv(tokens, i) and (i + 1 == len(tokens) or tokens[i + 1].text != "."):
            return False
    return True


class _Chain:
    """Recognises ``$mv.builder(args)(.modifier(args))*`` with literal arguments.

    Each ``parse`` method returns the index after what it matched, or None.
    """

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    def _text(self, i: int) -> str:
        return self.tokens[i].text if i < len(self.tokens) else ""

    def _kind(self, i: int) -> str:
        return self.tokens[i].kind if i < len(self.tokens) else ""

    def _mv_at(self, i: int) -> bool:
        return i < len(self.tokens) and _bare_mv(self.tokens, i)

    def parse(self, i: int) -> int | None:
        """The longest literal-only chain starting at ``$mv`` (at least the builder call)."""
        if self._text(i + 1) != "." or self._text(i + 2) not in _BUILDERS:
            return None
        if self._text(i + 3) != "(":
            return None
        end = self._builder_args(i + 4)
        if end is None:
            return None
        while self._text(end) == "." and self._text(end + 1) in _MODIFIERS:
            if self._text(end + 2) != "(":
                break
            after = self._modifier_args(end + 3)
            if after is None:
                break  # the pure prefix is still hoisted; this call runs per event
            end = after
        return end

    def _builder_args(self, i: int) -> int | None:
        if self._text(i) == ")":
            return i + 1
        if self._text(i) == "{":
            end = self._spec(i)
        elif self._mv_at(i):
            end = self._complete_chain(i)
        else:
            return None
        if end is None:
            return None
        if self._text(end) == ",":
            end += 1
        return end + 1 if self._text(end) == ")" else None

    def _complete_chain(self, i: int) -> int | None:
        """A chain used as a value must end where the value ends (no impure tail)."""
        end = self.parse(i)
        if end is None or self._text(end) not in (",", ")", "}"):
            return None
        return end

    def _spec(self, i: int) -> int | None:
        i += 1  # "{"
        while self._text(i) != "}":
            # `__proto__: x` (quoted or not) would set the spec's prototype, not a key.
            key = self._text(i)
            if self._kind(i) not in ("name", "str", "num") or not _mode_free(self.tokens[i]):
                return None
            if key.strip("'\"") == "__proto__":
                return None
            if self._text(i + 1) != ":" or not self._mv_at(i + 2):
                return None
            end = self._complete_chain(i + 2)
            if end is None:
                return None
            i = end + 1 if self._text(end) == "," else end
        return i + 1

    def _modifier_args(self, i: int) -> int | None:
        if self._text(i) == ")":
            return i + 1
        kind, text = self._kind(i), self._text(i)
        end: int
        if text in ("-", "+") and self._kind(i + 1) == "num" and _mode_free(self.tokens[i + 1]):
            end = i + 2
        elif (kind in ("num", "str") and _mode_free(self.tokens[i])) or (
            kind == "name" and text in _LITERAL_NAMES
        ):
            end = i + 1
        elif kind == "regex":
            flags = text[text.rindex("/") + 1 :]
            if "g" in flags or "y" in flags:
                return None  # test() moves lastIndex: a shared object would carry it over
            end = i + 1
        else:
            return None
        if self._text(end) == ",":
            end += 1
        return end + 1 if self._text(end) == ")" else None
