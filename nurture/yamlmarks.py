"""YAML loading that remembers the line of every key, so errors can point at it."""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        self.key, self.line = key, line


def load_with_lines(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML (safe subset) and return the data plus {path: 1-based line}.

    Raises yaml.YAMLError for syntax errors (with `problem_mark`) and DuplicateKey
    for a key written twice in one mapping, which PyYAML would silently overwrite.
    """
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[Path_, int] = {}
    if node is None:
        return None, lines
    loader = yaml.SafeLoader("")
    return _build(node, (), lines, loader), lines


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], loader: Any) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                raise DuplicateKey(str(key), key_node.start_mark.line + 1)
            key_path = (*path, key)
            result[key] = _build(value_node, key_path, lines, loader)
            lines[key_path] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def line_for(lines: dict[Path_, int], loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest known prefix of a (pydantic) error location."""
    for end in range(len(loc), -1, -1):
        found = lines.get(tuple(loc[:end]))
        if found is not None:
            return found
    return None
