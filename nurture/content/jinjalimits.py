"""A Jinja environment that refuses templates nested too deeply to compile.

Jinja parses and generates code recursively, and Python limits how deeply compiled
code may nest: a template of a few thousand nested `{% if %}`s, brackets or `+`s
ends in a RecursionError (or an IndentationError from Python's compiler) instead of a
syntax error. The lexer is not recursive, so its tokens are counted first and a
template past these bounds is a `TemplateSyntaxError` at the line where it goes too
deep, like any other mistake in a template.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

#: Nested block tags ({% if %}, {% for %}, ...) a template may use; Python refuses
#: more than 20 nested loops and 100 levels of indentation in the code Jinja makes.
MAX_BLOCKS = 12
#: Nested brackets inside one tag.
MAX_BRACKETS = 20
#: Tokens inside one tag (`{{ … }}` or `{% … %}`): a long chain of operators or
#: filters is compiled into as deep a tree.
MAX_TAG_TOKENS = 150

_BLOCKS = frozenset({"if", "for", "macro", "call", "filter", "block", "with", "autoescape",
                     "trans"})  # fmt: skip
_OPEN = frozenset({"lparen", "lbracket", "lbrace"})
_CLOSE = frozenset({"rparen", "rbracket", "rbrace"})
_TAG_BEGIN = frozenset({"block_begin", "variable_begin"})
_TAG_END = frozenset({"block_end", "variable_end"})


def check_depth(env: jinja2.Environment, source: str, name: str | None,
                filename: str | None) -> None:  # fmt: skip
    """Raise TemplateSyntaxError where `source` nests deeper than the limits above."""
    blocks, brackets, in_tag, after_begin = 0, 0, 0, False

    def fail(message: str, lineno: int) -> jinja2.TemplateSyntaxError:
        return jinja2.TemplateSyntaxError(message, lineno, name, filename)

    for token in env.lexer.tokenize(source, name, filename):
        if token.type in _TAG_BEGIN:
            in_tag, after_begin = 0, token.type == "block_begin"
            continue
        if token.type in _TAG_END:
            brackets = 0
            continue
        in_tag += 1
        if in_tag > MAX_TAG_TOKENS:
            raise fail(f"a tag longer than {MAX_TAG_TOKENS} words and symbols: split it up",
                       token.lineno)  # fmt: skip
        if after_begin and token.type == "name":
            if token.value in _BLOCKS:
                blocks += 1
                if blocks > MAX_BLOCKS:
                    raise fail(f"more than {MAX_BLOCKS} nested blocks", token.lineno)
            elif token.value.startswith("end") and token.value[3:] in _BLOCKS:
                blocks = max(0, blocks - 1)
        after_begin = False
        if token.type in _OPEN:
            brackets += 1
            if brackets > MAX_BRACKETS:
                raise fail(f"more than {MAX_BRACKETS} nested brackets", token.lineno)
        elif token.type in _CLOSE:
            brackets = max(0, brackets - 1)


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with every template checked by `check_depth` before it is parsed."""

    def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
        check_depth(self, source, name, filename)
        return super()._parse(source, name, filename)
