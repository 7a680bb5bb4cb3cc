"""Email rendering: one sandboxed, autoescaping Jinja environment with StrictUndefined.

Each step template is an HTML fragment wrapped by `_layout.html`; the layout's footer
carries the unsubscribe link and postal address, and a footer is added if a custom
layout forgets them, so no email ever leaves without.
"""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from jinja2 import meta, nodes
from markupsafe import Markup, escape

from nurture.content.inline import preinline, same_page
from nurture.content.jinjalimits import BoundedEnvironment
from nurture.content.skeleton import Skeletons
from nurture.content.textify import text_part, track_links
from nurture.errors import SequenceError, TemplateError

LAYOUT = "_layout"
#: Names every email template may use.
CONTEXT_NAMES = frozenset({"subscriber", "sequence", "step", "unsubscribe_url", "postal_address"})


class Attributes(dict[str, Any]):
    """A subscriber's fields as an email sees them: one the subscriber lacks is empty,
    never a send-time error (`validate` refuses a name nurture.toml does not declare)."""

    def __missing__(self, key: str) -> str:
        return ""


class DeclaredAttributes(dict[str, Any]):
    """`validate`'s sample fields: only the declared ones exist, so a typo is an error."""


@dataclass(frozen=True)
class SubscriberView:
    """What templates may see of a subscriber: no ids, no internal state."""

    email: str
    first_name: str | None = None
    timezone: str | None = None
    attributes: dict[str, Any] = field(default_factory=Attributes)
    tags: tuple[str, ...] = ()
    #: Signed into this person's confirm and unsubscribe links (tokens.Claim).
    link_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.attributes, (Attributes, DeclaredAttributes)):
            object.__setattr__(self, "attributes", Attributes(self.attributes))


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def example_root() -> Path:
    """The example workspace: packaged with a wheel, or the checkout this file lives in."""
    package = Path(__file__).parent.parent
    packaged = package / "example"
    return packaged if packaged.is_dir() else package.parent


@cache
def inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


class Renderer:
    #: Declared fields (name → type) that `validate` lets templates read.
    fields: dict[str, str]

    def __init__(self, templates_dir: Path):
        self.templates_dir = templates_dir
        self.fields = {}
        fallback = example_root() / "templates" / "email"
        self.env = BoundedEnvironment(
            loader=jinja2.FileSystemLoader([str(templates_dir), str(fallback)]),
            # HTML files are escaped; subjects (strings) and .txt files are plain text
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False
            ),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._subjects: dict[str, jinja2.Template] = {}
        self._inlined: dict[str, tuple[jinja2.Template, jinja2.Template, Any]] = {}
        self._skeletons = Skeletons(self.env)
        #: Sources of the pre-inlined layouts (made from strings), by template.
        self._strings: dict[int, str] = {}

    # -- rendering -------------------------------------------------------------------
    def render(
        self,
        template: str,
        subject: str,
        context: dict[str, Any],
        *,
        brand: str = "",
        preheader: str = "",
        rewrite_link: Callable[[str], str] | None = None,
        inline: bool = True,
    ) -> Rendered:
        """Render subject, HTML and text of one email; TemplateError on any problem.
        `inline=False` skips CSS inlining, which changes no link, image or text: for
        checks that read those (validate's lints), not for email that is sent."""
        try:
            subject_text = self._line(subject, context)
            pre = self._preinlined(template) if inline else None
            page, fragment_template = pre or (
                self.env.get_template(f"{LAYOUT}.html"),
                self.env.get_template(f"{template}.html"),
            )
            fragment, marked, links = track_links(fragment_template.render(context), rewrite_link)
            text_fragment = self._text_twin(template, context) or text_part(marked, links)
            layout_ctx = {
                **context,
                "content": Markup(fragment),  # noqa: S704 - rendered by our own sandbox
                "subject": subject_text,
                "brand": brand,
                "preheader": preheader,
            }
            html = self._layout(page, layout_ctx)
            text = self._layout(self.env.get_template(f"{LAYOUT}.txt"),
                                {**layout_ctx, "content": text_fragment})  # fmt: skip
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"template not found: {e.name}") from e
        except jinja2.TemplateError as e:
            raise TemplateError(f"{template}: {e}") from e
        html, text = _ensure_footer(html, text, context)
        return Rendered(subject_text, html if pre else inliner().inline(html), text)

    def _layout(self, page: jinja2.Template, context: dict[str, Any]) -> str:
        """The layout around one email's content, from its skeleton (skeleton.py)."""
        loader = self.env.loader
        assert loader is not None

        def source() -> str:
            if page.name is None:  # a pre-inlined layout, made from a string
                return self._strings[id(page)]
            return loader.get_source(self.env, page.name)[0]

        return self._skeletons.render(page, source, context)

    def _preinlined(self, template: str) -> tuple[jinja2.Template, jinja2.Template] | None:
        """The layout and the step's fragment with the CSS already inlined (see
        nurture/inline.py), or None to inline each email. Made again when either file
        changes (Jinja hands out a new template object then)."""
        layout = self.env.get_template(f"{LAYOUT}.html")
        fragment = self.env.get_template(f"{template}.html")
        cached = self._inlined.get(template)
        if cached is None or cached[0] is not layout or cached[1] is not fragment:
            cached = self._inlined[template] = (layout, fragment, self._preinline(layout, fragment))
        return cached[2]

    def _preinline(
        self, layout: jinja2.Template, fragment: jinja2.Template
    ) -> tuple[jinja2.Template, jinja2.Template] | None:
        loader = self.env.loader
        assert loader is not None and layout.name and fragment.name
        pre = preinline(loader.get_source(self.env, layout.name)[0],
                        loader.get_source(self.env, fragment.name)[0], inliner())  # fmt: skip
        if pre is None:
            return None
        pair = self.env.from_string(pre.layout), self.env.from_string(pre.fragment)
        self._strings[id(pair[0])] = pre.layout
        # The proof: a sample email comes out the same both ways.
        tricky = SubscriberView(email="x@example.com", first_name="<b>O'Brien & Co</b>")
        for preheader, subscriber in (("", None), ("A look inside", tricky)):
            context = {**self.sample(), "subject": "Example", "brand": "Example",
                       "preheader": preheader}  # fmt: skip
            context["subscriber"] = subscriber or context["subscriber"]
            try:
                made = [page.render({**context, "content": Markup(part.render(context))})  # noqa: S704
                        for page, part in (pair, (layout, fragment))]  # fmt: skip
            except Exception:  # noqa: BLE001 - a template the sample cannot fill: no proof
                return None
            if not same_page(made[0], inliner().inline(made[1])):
                return None
        return pair

    def sample(self) -> dict[str, Any]:
        """A context every template of this renderer can be rendered with (the proofs)."""
        return sample_context()

    def render_line(self, source: str, context: dict[str, Any]) -> str:
        """A one-line Jinja string (a subject, a preheader) rendered on one line."""
        try:
            return self._line(source, context)
        except jinja2.TemplateError as e:
            raise TemplateError(f"{source!r}: {e}") from e

    def _line(self, source: str, context: dict[str, Any]) -> str:
        if "{" not in source:  # no Jinja in it (no line statements are set): it is itself
            return " ".join(source.split())
        return " ".join(self._subject(source).render(context).split())

    def source(self, name: str) -> tuple[str, str]:
        """(source, path as `validate` shows it) of a template file, e.g. `x/y.html`;
        jinja2.TemplateNotFound if there is none."""
        source, filename, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
        return source, self._shown(filename or name)

    def _subject(self, source: str) -> jinja2.Template:
        """A subject's compiled template; compiling it for every email costs more than
        rendering it."""
        template = self._subjects.get(source)
        if template is None:
            template = self._subjects[source] = self.env.from_string(source)
        return template

    def _text_twin(self, template: str, context: dict[str, Any]) -> str | None:
        try:
            tmpl = self.env.get_template(f"{template}.txt")
        except jinja2.TemplateNotFound:
            return None
        return tmpl.render(context)

    # -- checking --------------------------------------------------------------------
    def check(self, template: str, where: SequenceError) -> list[SequenceError]:
        """Problems of one step template (and its text twin), each with file and line."""
        problems: list[SequenceError] = []
        found = False
        for ext in ("html", "txt"):
            name = f"{template}.{ext}"
            try:
                source, filename, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            except jinja2.TemplateNotFound:
                continue
            found = True
            problems.extend(self._check_source(source, self._shown(filename or name)))
        if not found:
            problems.append(
                SequenceError(where.path, where.line, f"template '{template}' not found "
                              f"(expected templates/email/{template}.html){self.suggest(template)}")
            )  # fmt: skip
        return problems

    def suggest(self, template: str) -> str:
        """' (did you mean …?)' among the workspace's email templates."""
        names = [n.removesuffix(".html") for n in self.env.list_templates(extensions=["html"])
                 if not n.startswith("_")]  # fmt: skip
        close = difflib.get_close_matches(template, names, n=1)
        return f" (did you mean '{close[0]}'?)" if close else ""

    def check_layout(self) -> list[SequenceError]:
        problems: list[SequenceError] = []
        for name in (f"{LAYOUT}.html", f"{LAYOUT}.txt"):
            source, filename, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            names = CONTEXT_NAMES | {"content", "subject", "brand", "preheader"}
            problems.extend(self._check_source(source, self._shown(filename or name), names))
        return problems

    def check_string(
        self, source: str, path: str, line: int, key: str = "subject"
    ) -> list[SequenceError]:
        """A subject line (or preheader): syntax and variables, reported at the YAML line."""
        return [
            SequenceError(path, line, f"{key}: {p.message}")
            for p in self._check_source(source, path)
        ]

    def _shown(self, filename: str) -> str:
        try:
            return str(Path(filename).relative_to(self.templates_dir.parent.parent))
        except ValueError:
            return filename

    def _check_source(
        self, source: str, shown: str, names: frozenset[str] = CONTEXT_NAMES
    ) -> list[SequenceError]:
        try:
            ast = self.env.parse(source)
        except jinja2.TemplateSyntaxError as e:
            return [SequenceError(shown, e.lineno, f"template syntax: {e.message}")]
        unknown = meta.find_undeclared_variables(ast) - names - set(self.env.globals)
        problems = [
            SequenceError(shown, node.lineno, f"undefined variable '{node.name}'"
                          f" (templates see: {', '.join(sorted(CONTEXT_NAMES))})")
            for node in ast.find_all(nodes.Name)
            if node.name in unknown and node.ctx == "load"
        ]  # fmt: skip
        if problems:
            return problems
        try:
            self.env.from_string(source).render(
                {**sample_context(self.fields), "content": "", "subject": "", "brand": "",
                 "preheader": ""}
            )  # fmt: skip
        except jinja2.UndefinedError as e:
            return [
                SequenceError(
                    shown, _template_line(e), f"undefined: {_undefined_hint(e, self.fields)}"
                )
            ]
        except jinja2.TemplateError as e:
            return [SequenceError(shown, _template_line(e), str(e))]
        except Exception as e:  # noqa: BLE001 - a marketer's template may raise anything
            return [SequenceError(shown, _template_line(e), f"{type(e).__name__}: {e}")]
        return []


@cache
def renderer_for(templates_dir: Path) -> Renderer:
    """One renderer per templates folder and process: templates are parsed and inlined once."""
    return Renderer(templates_dir)


def _undefined_hint(e: jinja2.UndefinedError, declared_fields: Mapping[str, str]) -> str:
    """Jinja's message with our own names, and a did-you-mean for subscriber fields
    (built-in ones, or the declared `attributes`)."""
    message = str(e.message).replace(f"'{SubscriberView.__module__}.SubscriberView object'",
                                     "subscriber")  # fmt: skip
    declared = f"'{__name__}.DeclaredAttributes object'"
    if declared in message:
        name = re.search(r"has no attribute '(\w+)'", message)
        close = difflib.get_close_matches(name.group(1), list(declared_fields), 1) if name else []
        hint = (f" (did you mean 'subscriber.attributes.{close[0]}'?)" if close
                else ": declare it in nurture.toml under [fields]")  # fmt: skip
        return message.replace(declared, "subscriber.attributes") + hint
    match = re.search(r"subscriber has no attribute '(\w+)'", message)
    if match:
        close = difflib.get_close_matches(match.group(1), SubscriberView.__dataclass_fields__, 1)
        if close:
            message += f" (did you mean 'subscriber.{close[0]}'?)"
    return message


def _template_line(exc: BaseException) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's own line."""
    lines = [
        f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"
    ]
    return lines[-1] if lines else None


_SAMPLE = {"text": "Sample", "number": 1, "date": "2026-01-31", "bool": "true"}


def sample_context(fields: dict[str, str] | None = None) -> dict[str, Any]:
    """A plausible subscriber for validation and previews, with each declared field."""
    attributes = DeclaredAttributes({name: _SAMPLE[kind] for name, kind in (fields or {}).items()})
    return {
        "subscriber": SubscriberView(
            email="sam@example.com", first_name="Sam", timezone="UTC", attributes=attributes
        ),  # fmt: skip
        "sequence": {"name": "example"},
        "step": {"id": "example", "subject": "Example", "stage": "education"},
        "unsubscribe_url": "https://example.com/unsubscribe/TOKEN",
        "postal_address": "1 Example Street, Exampleton",
    }


def _ensure_footer(html: str, text: str, context: dict[str, Any]) -> tuple[str, str]:
    url = str(context.get("unsubscribe_url") or "")
    address = str(context.get("postal_address") or "")
    missing_html = [x for x in (url, address) if x and str(escape(x)) not in html and x not in html]
    if missing_html:
        footer = Markup('<p class="footer" style="font-size:12px;color:#666">{}{}</p>').format(
            Markup('<a href="{}">Unsubscribe</a>').format(url) if url in missing_html else "",
            Markup("<br>{}").format(address) if address in missing_html else "",
        )
        html = html.replace("</body>", f"{footer}</body>") if "</body>" in html else html + footer
    missing_text = [x for x in (url, address) if x and x not in text]
    if missing_text:
        text = (
            text.rstrip("\n")
            + "\n\n-- \n"
            + "\n".join(("Unsubscribe: " + x) if x == url else x for x in missing_text)
            + "\n"
        )
    return html, text
