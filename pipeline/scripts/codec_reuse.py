"""Whether a device codec's top level can be loaded once and reused for every uplink.

Each uplink must see the codec as freshly loaded. The general way is to re-run the codec's top
level for every uplink (it is wrapped in a factory), which costs a closure per top-level function
and the top-level statements themselves. That work is only needed when the codec can keep
state between calls; this module proves, from the tokens alone, that it cannot:

* the top level holds nothing but function declarations (so the only state a call could keep is
  in those bindings or in the function objects);
* every use of a top-level name is a call (``name(...)``) or a property key (``x.name``): the
  bindings are never reassigned, and the function objects never escape, so nothing can store
  properties on them;
* the source never mentions ``eval``, ``Function``, ``with``, ``arguments``, ``caller`` or
  ``callee``, the ways to reach a binding or a function object without naming it.

Anything else (top-level variables, classes, aliases, an ambiguous token) keeps the per-uplink
factory. Globals a codec creates are handled separately, for both paths (see the prelude).

A codec function is called as a plain function, as the network servers call it, unless the
codec mentions ``this``: then ``this`` is an object holding the codec's exported functions
(fresh per uplink), where ``this.Decoder(...)`` has always worked.
"""

from __future__ import annotations

from eventray.pipeline.scripts.jslex import LexError, Token, tokenize

__all__ = ["mentions_this", "reusable_codec"]

_FORBIDDEN = frozenset(("eval", "Function", "with", "arguments", "caller", "callee"))


def reusable_codec(source: str) -> bool:
    """True if calling the codec's functions can never change what a later call sees."""
    try:
        tokens = tokenize(source)
    except LexError:
        return False
    declared = _top_level_functions(tokens)
    if not declared:
        return False
    for index, token in enumerate(tokens):
        if token.kind != "name":
            continue
        if token.text in _FORBIDDEN:
            return False
        if token.text in declared and not _harmless_use(tokens, index):
            return False
    return True


def mentions_this(source: str) -> bool:
    """True if the codec may read ``this`` (also when its tokens cannot be told apart)."""
    try:
        return any(token.kind == "name" and token.text == "this" for token in tokenize(source))
    except LexError:
        return True


def _top_level_functions(tokens: list[Token]) -> set[str]:
    """The names of the top-level function declarations, or an empty set if the top level
    holds anything else (a directive prologue and stray semicolons aside)."""
    names: set[str] = set()
    i, count = 0, len(tokens)
    while i < count and tokens[i].kind == "str":  # "use strict";
        i += 1
        if i < count and tokens[i].text == ";":
            i += 1
    while i < count:
        token = tokens[i]
        if token.text == ";":
            i += 1
            continue
        if not (
            token.text == "function"
            and i + 2 < count
            and tokens[i + 1].kind == "name"
            and tokens[i + 2].text == "("
        ):
            return set()
        names.add(tokens[i + 1].text)
        i = _skip_group(tokens, i + 2)  # the parameters
        if i >= count or tokens[i].text != "{":
            return set()
        i = _skip_group(tokens, i)  # the body
    return names


def _skip_group(tokens: list[Token], i: int) -> int:
    """The index after the bracket group opening at ``i`` (the lexer checked the balance)."""
    depth = 0
    while i < len(tokens):
        text = tokens[i].text
        if tokens[i].kind == "punct":
            if text in ("(", "[", "{"):
                depth += 1
            elif text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    return i + 1
        elif tokens[i].kind == "tmpl" and text.endswith("${"):
            depth += 1  # closed by the "}" that starts the next template chunk
        elif tokens[i].kind == "tmpl" and text.startswith("}"):
            depth -= 1
        i += 1
    return i


def _harmless_use(tokens: list[Token], index: int) -> bool:
    previous = tokens[index - 1].text if index > 0 else ""
    following = tokens[index + 1].text if index + 1 < len(tokens) else ""
    if previous in (".", "?."):
        return True  # a property key of some other object
    if previous == "function":
        return following == "("  # a declaration (or a nested one that shadows the name)
    return following == "(" and previous != "new"
