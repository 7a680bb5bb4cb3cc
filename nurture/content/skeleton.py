"""A layout rendered once, with holes where each email's own values go.

The layout around a step's content (`_layout.html`, `_layout.txt`) is the same page for
every reader of a step but for the content itself, the unsubscribe link and the
subject: rendering it again for each email spends most of its time making what the
email before made already. So a layout whose only uses of those three are plain
`{{ name }}` outputs is rendered once per step with unique marks in their place, and
each email is that text with its own values put in, escaped exactly where Jinja
escaped the marks. The rest of what the layout reads (brand, preheader, postal
address...) is the key: a different value renders a skeleton of its own.

A layout that reads the subscriber, includes or imports another template, or captures
or filters output (blocks, macros, `{% set %}` blocks, `{% filter %}`) is rendered for
each email as before; so is one whose skeleton, filled in, differs from the first
email rendered in full (a `random` filter, say): each skeleton is proved so once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta, nodes
from markupsafe import Markup, escape

#: The values that change between the emails of one step, when the layout shows them
#: as they are.
HOLES = ("content", "unsubscribe_url", "subject")
#: Marks no template writes (Unicode private use) with a `<` Jinja escapes or not.
_MARK = re.compile("\ue020(\\d+)(<|&lt;)\ue021")
#: Nodes that can hide what a template does with a value, or pull in another template.
_OPAQUE = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport, nodes.Macro,
           nodes.CallBlock, nodes.FilterBlock, nodes.AssignBlock, nodes.Block)  # fmt: skip
#: Skeletons kept per layout: one per step and subject, in practice.
LIMIT = 512


@dataclass(frozen=True)
class Skeleton:
    """The layout's text between holes, and each hole's name and whether it escapes."""

    parts: tuple[str, ...]
    holes: tuple[tuple[str, bool], ...]

    def fill(self, context: dict[str, Any]) -> str:
        out = [self.parts[0]]
        for (name, escaped), part in zip(self.holes, self.parts[1:], strict=True):
            value = context[name]
            out.append(str(escape(value)) if escaped else str(value))
            out.append(part)
        return "".join(out)


@dataclass
class _Layout:
    """What is known of one layout template: the names its skeletons are keyed by (None:
    it has none), and its skeletons by key."""

    template: jinja2.Template
    keys: tuple[str, ...] | None
    skeletons: dict[tuple[str, ...], Skeleton | None]


class Skeletons:
    """The skeletons of one renderer's layouts, made when first needed."""

    def __init__(self, env: jinja2.Environment):
        self.env = env
        self._layouts: dict[int, _Layout] = {}
        self._lock = threading.Lock()

    def render(
        self, template: jinja2.Template, source: Callable[[], str], context: dict[str, Any]
    ) -> str:
        """`template.render(context)`, from its skeleton where it has one. `source`
        gives the template's source, read when the template is first seen."""
        layout = self._layouts.get(id(template))
        if layout is None or layout.template is not template:
            layout = self._learn(template, source())
        if layout.keys is None:
            return template.render(context)
        key = tuple(repr(context.get(name)) for name in layout.keys)
        if key in layout.skeletons:
            found = layout.skeletons[key]
            return found.fill(context) if found else template.render(context)
        page = template.render(context)
        made = _make(template, context)
        proved = made if made is not None and made.fill(context) == page else None
        with self._lock:
            if len(layout.skeletons) >= LIMIT:
                layout.skeletons.clear()
            layout.skeletons[key] = proved
        return page

    def _learn(self, template: jinja2.Template, source: str) -> _Layout:
        layout = _Layout(template, _keys(self.env.parse(source)), {})
        with self._lock:
            if len(self._layouts) >= LIMIT:
                self._layouts.clear()
            self._layouts[id(template)] = layout  # a changed file is a new template object
        return layout


def _keys(ast: nodes.Template) -> tuple[str, ...] | None:
    """The names a skeleton of this layout is keyed by, or None when it can have none."""
    if any(True for _ in ast.find_all(_OPAQUE)):
        return None
    names = meta.find_undeclared_variables(ast)
    if "subscriber" in names:
        return None
    bare = {id(n) for out in ast.find_all(nodes.Output) for n in out.nodes
            if isinstance(n, nodes.Name) and n.name in HOLES}  # fmt: skip
    for name in ast.find_all(nodes.Name):
        if name.name in HOLES and (id(name) not in bare or name.ctx != "load"):
            return None  # used in a test, a filter, a loop...: not a plain value
    return tuple(sorted(names - set(HOLES)))


def _make(template: jinja2.Template, context: dict[str, Any]) -> Skeleton | None:
    marked = dict(context)
    for i, name in enumerate(HOLES):
        mark = f"\ue020{i}<\ue021"
        marked[name] = Markup(mark) if isinstance(context.get(name), Markup) else mark  # noqa: S704
    page = template.render(marked)
    pieces = _MARK.split(page)
    # split() gives text, then (index, escaped-or-not, text) for each mark
    parts = tuple(pieces[0::3])
    holes = tuple(
        (HOLES[int(i)], lt == "&lt;") for i, lt in zip(pieces[1::3], pieces[2::3], strict=True)
    )
    if "\ue020" in "".join(parts) or "\ue021" in "".join(parts):
        return None
    return Skeleton(parts, holes)
