"""CSS inlined into a step's templates once, when they are first used, instead of into
every email: css-inline parses and rewrites the whole page, which costs more than the
Jinja render itself, and the result differs between subscribers only in the values
Jinja fills in.

The layout (with the step's fragment where `{{ content }}` stands) is inlined as one
page, with every Jinja construct masked by a placeholder the HTML parser treats as
text. If a placeholder comes back missing, doubled or moved (HTML puts stray text in a
table in front of it, or Jinja sits where an attribute name goes), the templates are not
pre-inlined; nor are they if a sample render differs from inlining the rendered email.
Either way that step simply keeps inlining each email.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

import css_inline

#: `{{ content }}` in the layout: where the step's fragment goes.
CONTENT = re.compile(r"\{\{-?\s*content\s*-?\}\}")
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_TOKEN = re.compile("\ue000(\\d+)\ue001")
_START, _END = "<!--nurture:content-->", "<!--/nurture:content-->"
#: Autoescaping as the .html files get it: templates made from strings would have none.
_ESCAPED = "{% autoescape true %}", "{% endautoescape %}"


@dataclass(frozen=True)
class Preinlined:
    """Jinja sources with the CSS already applied (autoescaping switched on)."""

    layout: str
    fragment: str


def preinline(layout: str, fragment: str, inliner: css_inline.CSSInliner) -> Preinlined | None:
    """The layout and fragment sources inlined as one page, or None where that is unsafe."""
    spots = CONTENT.findall(layout)
    if len(spots) != 1 or _START in layout + fragment or _END in layout + fragment:
        return None
    page = layout.replace(spots[0], f"{_START}{fragment}{_END}")
    pieces: list[str] = []

    def mask(match: re.Match[str]) -> str:
        pieces.append(match.group(0))
        return f"\ue000{len(pieces) - 1}\ue001"

    masked = _JINJA.sub(mask, page)
    if "\ue000" in page or "\ue001" in page:
        return None
    try:
        inlined = inliner.inline(masked)
    except ValueError:
        return None
    found = [int(n) for n in _TOKEN.findall(inlined)]
    if found != list(range(len(pieces))) or inlined.count(_START) != 1 or inlined.count(_END) != 1:
        return None
    restored = _TOKEN.sub(lambda m: pieces[int(m.group(1))], inlined)
    before, rest = restored.split(_START)
    inner, after = rest.split(_END)
    return Preinlined(
        layout=f"{_ESCAPED[0]}{before}{{{{ content }}}}{after}{_ESCAPED[1]}",
        fragment=f"{_ESCAPED[0]}{inner}{_ESCAPED[1]}",
    )


def same_page(a: str, b: str) -> bool:
    """Whether two pages are the same elements, attributes, styles and text, whatever
    the order of each element's attributes."""
    return _events(a) == _events(b)


def _events(page: str) -> list[tuple[object, ...]]:
    events: list[tuple[object, ...]] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            events.append(("start", tag, tuple(sorted(attrs, key=lambda kv: kv[0]))))

        def handle_endtag(self, tag: str) -> None:
            events.append(("end", tag))

        def handle_data(self, data: str) -> None:
            events.append(("data", data))

    collector = Collector(convert_charrefs=True)
    collector.feed(page)
    collector.close()
    return events
