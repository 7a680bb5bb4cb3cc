"""A Jinja environment that refuses templates nested too deeply to compile, or that
would grow without bound when rendered.

Jinja parses and generates code recursively, and Python limits how deeply compiled
code may nest: a template of a few thousand nested `{% if %}`s, brackets or `+`s
ends in a RecursionError (or an IndentationError from Python's compiler) instead of a
syntax error. The lexer is not recursive, so its tokens are counted first and a
template past these bounds is a `TemplateSyntaxError` at the line where it goes too
deep, like any other mistake in a template.

The sandbox stops a template from reaching Python, not from asking for gigabytes: one
`{{ "x" * 300000000 }}` took 1.5 GB to validate. Every operation that can make its
result much larger than its inputs (repetition, powers, padding to a width, `%` and
`format` widths, `replace`, `join`, `indent`, `wordwrap`, `batch`, `lipsum`, doubling
by `~` or `+` in a loop, a list grown in a loop) is checked *before* it runs, and what
a template or a captured block renders is counted as it is made; past the bounds it is
a `SecurityError`, which `validate` reports at its line and rendering as a template
error.
"""

from __future__ import annotations

import functools
import inspect
import re
import string
from collections.abc import Callable, Iterable
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import generate_lorem_ipsum

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


#: Items one operation may make: characters of a string, elements of a list, a width.
MAX_ITEMS = 100_000
#: Characters a template, or a block it captures, may render to; also the largest
#: string a concatenation or a `join` may make. An email is a few tens of kilobytes.
MAX_OUTPUT = 2_000_000
#: Bits of an integer `**` may make (about 30,000 decimal digits).
MAX_POWER_BITS = 100_000
#: Widest `tojson` indent.
MAX_INDENT = 64

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_PASSED = frozenset({"eval_ctx", "environment", "context"})
_GROWING_METHODS = frozenset({"append", "extend", "insert", "update", "setdefault", "add"})


def _refuse(what: str) -> SecurityError:
    return SecurityError(f"{what}: templates may not make anything that large")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict | set) else 0


def check_width(width: Any, what: str = "a width") -> None:
    if isinstance(width, int) and width > MAX_ITEMS:
        raise _refuse(f"{what} of {width:,}")


def check_result(size: int, what: str, bound: int = MAX_OUTPUT) -> None:
    if size > bound:
        raise _refuse(f"{what} of {size:,} characters or items")


def check_percent(template: Any, values: Any) -> None:
    """`template % values`: no width or precision beyond MAX_ITEMS, given or by `*`."""
    if not isinstance(template, str):
        return
    starred = False
    for width, precision in _PERCENT_SPEC.findall(template):
        for number in (width, precision):
            starred = starred or number == "*"
            if number.isdigit():
                check_width(int(number))
    if starred:
        for value in values if isinstance(values, tuple) else (values,):
            check_width(value)


def check_format(template: str, args: Iterable[Any], kwargs: dict[str, Any]) -> None:
    """`template.format(...)`: no width beyond MAX_ITEMS, written or passed as `{:{}}`."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format raises the same error itself
    for _, _, spec, _ in fields:
        for number in re.findall(r"\d+", spec or ""):
            check_width(int(number))
        if spec and "{" in spec:
            for value in [*args, *kwargs.values()]:
                check_width(value)


def check_replace(s: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        return
    times = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    check_result(len(s) + times * (len(new) - len(old)), "a replace")


def check_join(items: list[Any], separator: Any) -> None:
    size = sum(_size(i) for i in items) + max(len(items) - 1, 0) * _size(separator)
    check_result(size, "a join")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `*`, `**` and `+` whose result would pass the bounds, before computing it."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if _size(seq) and isinstance(times, int):
                check_result(_size(seq) * times, "a repetition", MAX_ITEMS)
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            check_result(left.bit_length() * right, "a power", MAX_POWER_BITS)
    elif operator == "+":
        if _size(left) and _size(right):
            check_result(_size(left) + _size(right), "a concatenation")
    elif operator == "%":
        check_percent(left, right)


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call whose result would pass the bounds; returns the arguments to
    call with (an iterable to join is read once, here)."""
    owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, str):
        if name in ("center", "ljust", "rjust", "zfill") and args:
            check_width(args[0])
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tab, int):
                check_result(len(owner) + owner.count("\t") * tab, "expanded tabs")
        elif name == "replace" and len(args) >= 2:
            check_replace(owner, *args[:3])
        elif name == "join" and args:
            items = list(args[0])
            check_join(items, owner)
            return (items, *args[1:])
        elif name == "format":
            check_format(owner, args, kwargs)
        elif name == "format_map" and args and isinstance(args[0], dict):
            check_format(owner, (), args[0])
    elif isinstance(owner, list | dict | set) and name in _GROWING_METHODS:
        added = _size(args[0]) if name in ("extend", "update") and args else 1
        check_result(len(owner) + added, f"a {type(owner).__name__}", MAX_ITEMS)
    return args


def _guarded(func: Callable[..., Any], check: Callable[[dict[str, Any]], None]
             ) -> Callable[..., Any]:  # fmt: skip
    """`func` (a Jinja filter, its pass_context marks kept) with `check` run on its
    arguments by name first."""
    signature = inspect.signature(func)
    # An async-capable filter is marked to get the eval context its signature (that of
    # the sync function it wraps) may not name.
    first = next(iter(signature.parameters), "")
    lead = int(hasattr(func, "jinja_pass_arg") and first not in _PASSED)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args[lead:], **kwargs)
        bound.apply_defaults()
        check(bound.arguments)
        return func(*args[:lead], *bound.args, **bound.kwargs)

    return guarded


def _check_indent(a: dict[str, Any]) -> None:
    width, lines = a["width"], str(a["s"]).count("\n") + 1
    step = width if isinstance(width, int) else _size(width)
    check_result(_size(a["s"]) + lines * step, "an indent")


def _check_wordwrap(a: dict[str, Any]) -> None:
    text, wrap = str(a["s"]), a["wrapstring"] or "\n"
    lines = len(text) // max(int(a["width"]), 1) + text.count("\n") + 1
    check_result(len(text) + lines * _size(wrap), "a word wrap")


def _check_join(a: dict[str, Any]) -> None:
    a["value"] = list(a["value"])
    check_join(a["value"], a["d"])


def _check_tojson(a: dict[str, Any]) -> None:
    indent = a["indent"]
    if (isinstance(indent, int) and indent > MAX_INDENT) or _size(indent) > MAX_INDENT:
        raise _refuse(f"a tojson indent wider than {MAX_INDENT}")


_FILTER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": lambda a: check_width(a["width"]),
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "join": _check_join,
    "replace": lambda a: check_replace(str(a["s"]), a["old"], a["new"],
                                       -1 if a["count"] is None else a["count"]),
    "format": lambda a: check_percent(str(a["value"]), a["kwargs"] or a["args"]),
    "batch": lambda a: check_width(a["linecount"], "a batch"),
    "slice": lambda a: check_width(a["slices"], "a slice count"),
    "tojson": _check_tojson,
}  # fmt: skip


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    """Jinja's `lipsum`, bounded: its paragraphs and words are the caller's to choose."""
    if isinstance(n, int) and isinstance(max, int):
        check_result(n * max, "lipsum words", MAX_ITEMS)
    return str(generate_lorem_ipsum(n, html, min, max))


def bounded_concat(parts: Iterable[str]) -> str:
    """`environment.concat`: what a template or a captured block renders, counted as it
    is made, so a loop of large pieces stops at MAX_OUTPUT instead of at the memory's end."""
    pieces, total = [], 0
    for piece in parts:
        total += len(piece)
        if total > MAX_OUTPUT:
            raise _refuse(f"output of more than {MAX_OUTPUT:,} characters")
        pieces.append(piece)
    return "".join(pieces)


def bounded_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
    """The operands of a `~`, refused when together they pass MAX_OUTPUT."""
    check_result(sum(_size(p) for p in parts), "a concatenation")
    return parts


class BoundedBuffer(list[Any]):
    """The list a captured block (`{% set x %}`, a macro, `{% filter %}`) collects its
    output in before joining it: counted as it fills, like `bounded_concat`."""

    size = 0

    def append(self, piece: Any) -> None:
        self._grow(_size(piece))
        super().append(piece)

    def extend(self, pieces: Iterable[Any]) -> None:
        pieces = tuple(pieces)
        self._grow(sum(_size(p) for p in pieces))
        super().extend(pieces)

    def _grow(self, size: int) -> None:
        self.size += size
        if self.size > MAX_OUTPUT:
            raise _refuse(f"output of more than {MAX_OUTPUT:,} characters")


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with each `~` checked by `bounded_parts` first and each
    captured block collected in a `BoundedBuffer`."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.bounded_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with every template checked by `check_depth` before it is parsed,
    and every operation that could grow without bound checked before it runs."""

    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(bounded_concat)  # type: ignore[assignment]
    bounded_parts = staticmethod(bounded_parts)
    bounded_buffer = BoundedBuffer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _guarded(self.filters[name], check)
        self.globals["lipsum"] = _lipsum

    def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
        check_depth(self, source, name, filename)
        return super()._parse(source, name, filename)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        args = check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)
