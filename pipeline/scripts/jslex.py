"""A conservative JavaScript tokenizer for the bundle's static checks (codec reuse, $mv hoisting).

The checks built on it only ever *enable* an optimisation when they can prove it safe, so this
tokenizer's rule is: when the source is ambiguous to a lexer without a parser, refuse
(:class:`LexError`) instead of guessing. Guessing wrong about a ``/`` (division or regular
expression?) could hide real code inside a fake literal. The refusals are rare shapes: a ``/``
right after a ``}`` or after ``++``/``--``, a backslash outside a literal (a unicode escape could
spell an identifier), HTML-like comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["LexError", "Token", "tokenize"]

TokenKind = Literal["name", "num", "str", "tmpl", "regex", "punct"]


class LexError(ValueError):
    """The source cannot be tokenized with certainty (or is not valid JavaScript)."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    start: int
    end: int


# After these reserved words an expression starts, so a "/" begins a regular expression.
_EXPRESSION_KEYWORDS = frozenset(
    ["return", "typeof", "instanceof", "in", "new", "delete", "void", "throw", "case", "do", "else"]
)
# Contextual keywords are also plain identifiers (`var of = 4; of / 2`): a "/" after one is
# ambiguous without a parser.
_CONTEXTUAL_KEYWORDS = frozenset(["of", "yield", "await", "let", "async", "get", "set", "static"])
# A ")" closing the head of one of these is followed by a statement, not an operand.
_CONTROL_KEYWORDS = frozenset(("if", "while", "for", "with"))
# Longest first, so that ">>>=" is not read as ">" ">" ">=".
_PUNCTUATOR_TEXT = """>>>= ... === !== **= <<= >>= >>> &&= ||= ??= => == != <= >= && || ?? ?. ++ --
+= -= *= /= %= &= |= ^= ** << >> { } ( ) [ ] ; , < > + - * / % & | ^ ! ~ ? : = . @ #"""
_PUNCTUATORS = sorted(_PUNCTUATOR_TEXT.split(), key=len, reverse=True)
_NAME = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]+")
_NUMBER = re.compile(
    r"0[xXoObB][0-9a-fA-F_]+n?|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?n?"
)
_SPACE = re.compile(r"[ \t\r\n\u00a0\ufeff\u2028\u2029\v\f]+")


def tokenize(source: str) -> list[Token]:
    """Tokens of ``source`` without comments and white space.

    Raises:
        LexError: the source is ambiguous to a lexer, or not well-formed.
    """
    return _Lexer(source).run()


class _Lexer:
    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0
        self.tokens: list[Token] = []
        # One entry per open bracket: "{", "[", "(", "ctl(" (a control head) or "${".
        self.stack: list[str] = []
        # For each ")" already read: whether it closed a control head (indexed by token).
        self.closes_control: set[int] = set()

    def run(self) -> list[Token]:
        src = self.src
        if "<!--" in src or "-->" in src:
            raise LexError("HTML-like comment markers")
        if src.startswith("#!"):
            self.pos = src.find("\n") if "\n" in src else len(src)
        while self.pos < len(src):
            self._step()
        if self.stack:
            raise LexError("unbalanced brackets")
        return self.tokens

    def _emit(self, kind: TokenKind, start: int, end: int) -> None:
        self.tokens.append(Token(kind, self.src[start:end], start, end))
        self.pos = end

    def _regex_allowed(self) -> bool:
        if not self.tokens:
            return True
        last = self.tokens[-1]
        if last.kind == "tmpl":
            return last.text.endswith("${")  # a substitution starts an expression
        if last.kind in ("num", "str", "regex"):
            return False
        if last.kind == "name":
            after_dot = len(self.tokens) > 1 and self.tokens[-2].text in (".", "?.")
            if after_dot:
                return False  # a property named like a keyword: `x.return / 2`
            if last.text in _CONTEXTUAL_KEYWORDS:
                raise LexError(f"ambiguous '/' after {last.text!r}")
            return last.text in _EXPRESSION_KEYWORDS
        if last.text == ")":
            return len(self.tokens) - 1 in self.closes_control
        if last.text in ("}", "++", "--"):
            raise LexError(f"ambiguous '/' after {last.text!r}")
        return last.text != "]"

    def _step(self) -> None:
        src, pos = self.src, self.pos
        char = src[pos]
        space = _SPACE.match(src, pos)
        if space:
            self.pos = space.end()
            return
        if src.startswith("//", pos):
            end = src.find("\n", pos)
            self.pos = len(src) if end < 0 else end
            return
        if src.startswith("/*", pos):
            end = src.find("*/", pos + 2)
            if end < 0:
                raise LexError("unterminated comment")
            self.pos = end + 2
            return
        if char in "'\"":
            self._emit("str", pos, self._string_end(pos))
            return
        if char == "`":
            self._template(pos + 1, pos)
            return
        if char == "}" and self.stack and self.stack[-1] == "${":
            self.stack.pop()
            self._template(pos + 1, pos)
            return
        if char == "/" and self._regex_allowed():
            self._emit("regex", pos, self._regex_end(pos))
            return
        if char.isdigit() or (char == "." and src[pos + 1 : pos + 2].isdigit()):
            number = _NUMBER.match(src, pos)
            assert number is not None
            if _NAME.match(src, number.end()):
                raise LexError("identifier directly after a number")
            self._emit("num", pos, number.end())
            return
        name = _NAME.match(src, pos)
        if name:
            self._emit("name", pos, name.end())
            return
        if char == "\\":
            raise LexError("escape sequence outside a literal")
        self._punctuator(pos)

    def _punctuator(self, pos: int) -> None:
        src = self.src
        for punct in _PUNCTUATORS:
            if src.startswith(punct, pos):
                break
        else:
            raise LexError(f"unexpected character {src[pos]!r}")
        if punct == "?." and src[pos + 2 : pos + 3].isdigit():
            punct = "?"  # a ? .5 : b
        if punct in ("(", "[", "{"):
            previous = self.tokens[-1].text if self.tokens else ""
            self.stack.append("ctl(" if punct == "(" and previous in _CONTROL_KEYWORDS else punct)
        elif punct in (")", "]", "}"):
            opener = {")": "(", "]": "[", "}": "{"}[punct]
            if not self.stack or self.stack[-1].removeprefix("ctl") != opener:
                raise LexError(f"unbalanced {punct!r}")
            if self.stack.pop() == "ctl(":
                self.closes_control.add(len(self.tokens))
        self._emit("punct", pos, pos + len(punct))

    def _string_end(self, pos: int) -> int:
        src, quote, i = self.src, self.src[pos], pos + 1
        while i < len(src):
            char = src[i]
            if char == "\\":
                i += 2
                continue
            if char == quote:
                return i + 1
            if char in "\n\r":
                break
            i += 1
        raise LexError("unterminated string")

    def _regex_end(self, pos: int) -> int:
        src, i, in_class = self.src, pos + 1, False
        while i < len(src):
            char = src[i]
            if char == "\\":
                i += 2
                continue
            if char in "\n\r":
                break
            if char == "[":
                in_class = True
            elif char == "]":
                in_class = False
            elif char == "/" and not in_class:
                flags = _NAME.match(src, i + 1)
                return flags.end() if flags else i + 1
            i += 1
        raise LexError("unterminated regular expression")

    def _template(self, i: int, start: int) -> None:
        """Reads template text up to the closing backquote or the next ``${``."""
        src = self.src
        while i < len(src):
            char = src[i]
            if char == "\\":
                i += 2
                continue
            if char == "`":
                self._emit("tmpl", start, i + 1)
                return
            if src.startswith("${", i):
                self._emit("tmpl", start, i + 2)
                self.stack.append("${")
                return
            i += 1
        raise LexError("unterminated template literal")
