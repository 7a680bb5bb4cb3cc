"""YAML loading that remembers the line of every key, so errors can point at it.

Files written by people (sequences, newsletter front matter) may not use anchors and
aliases, and may nest only `MAX_DEPTH` levels: an alias expands into a copy of what
it names, so a few hundred bytes of nested aliases become gigabytes, and an alias
inside what it names (`steps: &a [*a]`) never ends. Nothing here needs either.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent

Path_ = tuple[Any, ...]  # keys and list indexes from the root

#: Deepest nesting of lists and mappings a file may use (a sequence needs about 5).
MAX_DEPTH = 40


class DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        self.key, self.line = key, line


class RefusedYAML(yaml.MarkedYAMLError):
    """Valid YAML that a workspace file may not use; `problem` says why, at `problem_mark`."""

    def __init__(self, problem: str, mark: yaml.Mark):
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(yaml.SafeLoader):
    """The safe loader's composer, refusing anchors, aliases and deep nesting as it reads."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            raise RefusedYAML("anchors and aliases (&name, *name) are not allowed here: "
                              "write the value out in full", event.start_mark)  # fmt: skip
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        if self.depth >= MAX_DEPTH:
            raise RefusedYAML(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_with_lines(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML (safe subset) and return the data plus {path: 1-based line}.

    Raises yaml.YAMLError for syntax errors and refused constructs (with `problem_mark`)
    and DuplicateKey for a key written twice in one mapping, which PyYAML would
    silently overwrite.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    if node is None:
        return None, lines
    return _build(node, (), lines, yaml.SafeLoader("")), lines


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], loader: Any) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(loader, key_node)
            try:
                hash(key)
            except TypeError:
                raise RefusedYAML("a key must be a plain value, not a list or mapping",
                                  key_node.start_mark) from None  # fmt: skip
            if key in result:
                raise DuplicateKey(str(key), key_node.start_mark.line + 1)
            key_path = (*path, key)
            result[key] = _build(value_node, key_path, lines, loader)
            lines[key_path] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, loader) for i, item in enumerate(node.value)]
    return _construct(loader, node)


def _construct(loader: Any, node: yaml.Node) -> Any:
    """One value; a tag the value does not fit (`!!timestamp soon`) is a marked error, as
    PyYAML's own constructors sometimes raise plain Python errors for it."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError):
        tag = node.tag.rsplit(":", 1)[-1]
        raise RefusedYAML(f"{node.value!r} is not a valid {tag}", node.start_mark) from None


def line_for(lines: dict[Path_, int], loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest known prefix of a (pydantic) error location."""
    for end in range(len(loc), -1, -1):
        found = lines.get(tuple(loc[:end]))
        if found is not None:
            return found
    return None


def explain(error: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line, plain sentence) for a YAML error: where the problem starts (for an
    unclosed quote or bracket, the line that opened it) and what to check, rather than
    the parser's own words ("expected <block end>, but found '<block mapping start>'")."""
    problem = str(getattr(error, "problem", None) or error)
    context = str(getattr(error, "context", None) or "")
    at, opened = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
    line = at.line + 1 if at is not None else None
    start = opened.line + 1 if opened is not None else line
    if "quoted scalar" in context:
        return (
            start,
            "a quote opened on this line is never closed: end the value with the same quote",
        )
    if "flow sequence" in context or "flow mapping" in context:
        return start, "a '[' or '{' opened on this line is never closed"
    if "'\\t'" in problem or "\t" in problem:
        return line, "a tab indents this line: YAML indents with spaces only"
    if problem.startswith("expected <block end>") and "<scalar>" in problem:
        return line, ("unexpected text after a value: put the whole value in quotes, or "
                      "check the indentation of this line against the one above")  # fmt: skip
    if problem.startswith(("expected <block end>", "expected <block mapping start>")):
        return (
            line,
            "this line is not indented as expected: check the indentation of this line against the one above",
        )
    if problem.startswith("mapping values are not allowed"):
        return line, ("a ':' where none is expected: check the indentation of this line "
                      "against the one above, or put a value holding ': ' in quotes")  # fmt: skip
    return line, problem
