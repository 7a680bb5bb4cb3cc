"""A readable text/plain part from HTML when a template has no `.txt` twin.

Deriving it parses the HTML (a fifth of a millisecond for a short email), so it is
done once per distinct fragment: with each tracked link marked (`link_mark`), the
fragments of one step's emails differ only where a reader's own values show, and a
step that shows none derives its text once."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from html.parser import HTMLParser

_BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "table", "tr", "ul", "ol", "blockquote", "hr"}
_SKIP = {"style", "script", "head", "title"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping: list[str] = []  # open elements whose text is not shown
        self.href: str | None = None
        self.link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        hidden = "display:none" in (dict(attrs).get("style") or "").replace(" ", "")
        if tag in _SKIP or hidden or (self.skipping and tag == self.skipping[-1]):
            self.skipping.append(tag)  # e.g. the hidden preheader: not for the text part
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "a":
            self.href = dict(attrs).get("href")
            self.link_text = []

    def handle_endtag(self, tag: str) -> None:
        if self.skipping and tag == self.skipping[-1]:
            self.skipping.pop()
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "a" and self.href:
            text = "".join(self.link_text).strip()
            if self.href not in text:
                self.out.append(f" ({self.href})" if text else self.href)
            self.href = None

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        data = re.sub(r"\s+", " ", data)
        self.out.append(data)
        if self.href is not None:
            self.link_text.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    text = "".join(parser.out)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


#: The links of a rendered fragment that tracking rewrites.
_HREF = re.compile(r'href="(https?://[^"]+)"')
#: Stands for a tracked link while the text is derived: Unicode private use, which no
#: template writes (one that does has its text derived on its own, as before).
_MARK = "\ue030{}\ue031"


def link_mark(i: int) -> str:
    return _MARK.format(i)


def text_part(fragment: str, links: Sequence[str] = ()) -> str:
    """The text part of an HTML fragment in which link `i` of `links` stands as
    `link_mark(i)` in an href: the text of the fragment with the links in it."""
    text = _derived(fragment)
    for i, url in enumerate(links):
        text = text.replace(link_mark(i), url)
    return text


@lru_cache(maxsize=256)
def _derived(fragment: str) -> str:
    return html_to_text(fragment)


def track_links(fragment: str, rewrite: Callable[[str], str] | None) -> tuple[str, str, list[str]]:
    """The fragment with each link rewritten (`rewrite`: links.link_rewriter), the
    same with each link that changed marked instead (`link_mark`), and those links:
    what `text_part` takes."""
    if rewrite is None or "\ue030" in fragment:
        return fragment, fragment, []
    html: list[str] = []
    marked: list[str] = []
    links: list[str] = []
    last = 0
    for match in _HREF.finditer(fragment):
        before, url = fragment[last : match.start(1)], match.group(1)
        new = rewrite(url)
        html += (before, new)
        marked += (before, url if new == url else link_mark(len(links)))
        links += [new] if new != url else []
        last = match.end(1)
    return "".join([*html, fragment[last:]]), "".join([*marked, fragment[last:]]), links
