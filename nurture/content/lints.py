"""Content lints: what makes an email worse for the people who read it, found on a
rendered sample of every step (the one `validate` renders anyway).

Errors: a link that is relative or malformed (it cannot work from an inbox), an empty
text part. Warnings: an image without `alt`, link text that says "click here", no
`lang` on the layout's <html>, a subject longer than inboxes show, no preheader, and
with `check_links`, a URL that does not answer. Each at the template's line where the
offending text is written, or the step's line in the sequence file.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from nurture.content.rendering import LAYOUT, Rendered, Renderer, sample_context
from nurture.content.sequences import Catalog, Sequence, Step
from nurture.content.textify import html_to_text
from nurture.content.yamlmarks import line_for, load_with_lines
from nurture.errors import SequenceError, TemplateError
from nurture.settings import Settings

#: Characters of a subject most inboxes show before cutting it.
SUBJECT_MAX = 78
#: Link texts that say nothing about where the link leads (screen readers list links
#: by their text alone).
VAGUE_LINK_TEXT = frozenset({"click here", "here", "click", "this link", "link", "click this"})
_HOST = re.compile(
    r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)$"
)


class _Page(HTMLParser):
    """The links, images, <html lang> and preheader of one rendered email."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []  # (href, its text)
        self.images: list[dict[str, str | None]] = []
        self.lang: str | None = None
        self.preheader = False
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "html":
            self.lang = (found.get("lang") or "").strip()
        elif tag == "img":
            self.images.append(found)
        elif tag == "a" and found.get("href") is not None:
            self._open.append([str(found["href"]), ""])
        if "preheader" in (found.get("class") or "").split():
            self.preheader = True

    def handle_data(self, data: str) -> None:
        for link in self._open:
            link[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            href, text = self._open.pop()
            self.links.append((href, " ".join(text.split())))


def link_problem(href: str) -> str | None:
    """Why an email link cannot work, or None: it must be absolute and well-formed."""
    if not href.strip():
        return "is empty"
    scheme, colon, rest = href.partition(":")
    if colon and scheme.lower() in ("mailto", "tel"):
        return None if rest.strip() else "has no address after " + scheme + ":"
    if any(c.isspace() for c in href):
        return "contains a space (write %20)"
    parts = urlsplit(href)
    if not parts.scheme:
        return "is relative: a link in an email must be absolute (https://…)"
    if parts.scheme.lower() not in ("http", "https"):
        return f"uses {parts.scheme}: (use https://, mailto: or tel:)"
    try:
        parts.port  # noqa: B018 - raises for a malformed port
    except ValueError:
        return "has a malformed port"
    if not parts.netloc or not _HOST.match((parts.hostname or "").lower()):
        return "has no valid host name (like https://example.com/page)"
    return None


def lint_workspace(
    settings: Settings, renderer: Renderer, catalog: Catalog, *, check_links: bool = False
) -> list[SequenceError]:
    """Every lint of every loaded sequence's steps (a file with errors is skipped: its
    errors come first)."""
    problems: list[SequenceError] = []
    links: dict[str, tuple[str, int | None]] = {}
    lang_checked = False
    for seq in catalog.sequences.values():
        lines = _lines(settings.sequences_dir.parent / seq.path)
        for index, step in enumerate(seq.steps):
            sample = _render(renderer, seq, step)
            if sample is None:
                continue  # `check` reports why it does not render
            rendered, text_part = sample
            page = _Page()
            page.feed(rendered.html)
            if not lang_checked:
                problems.extend(_lang(renderer, page))
                lang_checked = True
            problems.extend(_page(renderer, step, page, links))
            problems.extend(_text(renderer, step, text_part))
            problems.extend(_headline(seq, step, rendered, page, lines, index))
    if check_links and links:
        # imported only when asked: http.client costs `validate` in a git hook ~0.1 s
        from nurture.content.linkcheck import probe_all

        for url, problem in sorted(probe_all(links).items()):
            path, line = links[url]
            problems.append(SequenceError(path, line, f"link {url} {problem}", warning=True))
    return problems


def _lines(path: Path) -> dict[Any, int]:
    try:
        return load_with_lines(path.read_text(encoding="utf-8"))[1]
    except Exception:  # noqa: BLE001 - it loaded a moment ago; lines are a nicety
        return {}


def _render(renderer: Renderer, seq: Sequence, step: Step) -> tuple[Rendered, str] | None:
    """The sample email of a step and its text part without the layout's footer."""
    context = {**sample_context(renderer.fields), "sequence": {"name": seq.name},
               "step": {"id": step.id, "subject": step.subject, "stage": str(step.stage)}}  # fmt: skip
    try:
        preheader = renderer.render_line(step.preheader, context) if step.preheader else ""
        rendered = renderer.render(step.template, step.subject, context, preheader=preheader,
                                   inline=False)  # fmt: skip
        try:
            text = renderer.env.get_template(f"{step.template}.txt").render(context)
        except jinja2.TemplateNotFound:
            text = html_to_text(renderer.env.get_template(f"{step.template}.html").render(context))
    except (TemplateError, jinja2.TemplateError):
        return None
    except Exception:  # noqa: BLE001 - a marketer's template may raise anything; `check` says
        return None
    return rendered, text


def _locate(renderer: Renderer, template: str, needle: str) -> tuple[str, int | None]:
    """The template file and line where `needle` is written: the step's own template,
    then the layout; else the step's template without a line (it came from a variable)."""
    first: str | None = None
    for name in (f"{template}.html", f"{LAYOUT}.html"):
        try:
            source, shown = renderer.source(name)
        except jinja2.TemplateNotFound:
            continue
        first = first or shown
        for written in (needle, html.escape(needle)):
            at = source.find(written)
            if written and at >= 0:
                return shown, source.count("\n", 0, at) + 1
    return first or f"templates/email/{template}.html", None


def _page(
    renderer: Renderer, step: Step, page: _Page, links: dict[str, tuple[str, int | None]]
) -> list[SequenceError]:
    problems: list[SequenceError] = []
    for href, text in page.links:
        path, line = _locate(renderer, step.template, href)
        problem = link_problem(href)
        if problem:
            problems.append(SequenceError(path, line, f"link {href!r} {problem}"))
        elif urlsplit(href).scheme.lower() in ("http", "https") and "/unsubscribe/" not in href:
            links.setdefault(href, (path, line))
        if text.lower().strip(" .!:>»→") in VAGUE_LINK_TEXT:
            problems.append(SequenceError(path, line, f"link text {text!r} says nothing about "
                            "where it leads: name the destination instead", warning=True))  # fmt: skip
    for image in page.images:
        if image.get("alt") is None:
            src = image.get("src") or ""
            path, line = _locate(renderer, step.template, src)
            problems.append(SequenceError(path, line, f"image {src!r} has no alt text (write "
                            'alt="" for a decorative one)', warning=True))  # fmt: skip
    return problems


def _lang(renderer: Renderer, page: _Page) -> list[SequenceError]:
    if page.lang:
        return []
    source, shown = renderer.source(f"{LAYOUT}.html")
    at = source.lower().find("<html")
    line = source.count("\n", 0, at) + 1 if at >= 0 else None
    return [SequenceError(shown, line, 'the layout\'s <html> has no lang (like <html lang="en">): '
                          "screen readers need it to pronounce the email", warning=True)]  # fmt: skip


def _text(renderer: Renderer, step: Step, text: str) -> list[SequenceError]:
    if text.strip():
        return []
    for name in (f"{step.template}.txt", f"{step.template}.html"):
        try:
            shown = renderer.source(name)[1]
        except jinja2.TemplateNotFound:
            continue
        return [SequenceError(shown, None, "the text part is empty: readers whose mail app "
                              "shows plain text would get a blank email")]  # fmt: skip
    return []


def _headline(
    seq: Sequence, step: Step, rendered: Rendered, page: _Page, lines: dict[Any, int], index: int
) -> list[SequenceError]:
    problems: list[SequenceError] = []
    if len(rendered.subject) > SUBJECT_MAX:
        line = line_for(lines, ("steps", index, "subject")) or step.line
        problems.append(SequenceError(seq.path, line, f"step '{step.id}': the subject is "
                        f"{len(rendered.subject)} characters; inboxes show about {SUBJECT_MAX}",
                        warning=True))  # fmt: skip
    if not page.preheader:
        problems.append(SequenceError(seq.path, step.line, f"step '{step.id}' has no preheader: "
                        "add `preheader:`, the line inboxes show after the subject",
                        warning=True))  # fmt: skip
    return problems
