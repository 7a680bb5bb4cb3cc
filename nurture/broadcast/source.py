"""Where an issue comes from: a Markdown file with front matter, or a Jinja template.

Markdown is rendered once, here, into a Jinja HTML fragment; the Jinja tags written in
it (`{{ subscriber.first_name }}`) are set aside first and put back after, so
markdown-it never mangles them and personalisation works as in any template. The
text part is the Markdown itself, which reads well as plain text.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, ValidationError

from nurture.content.durations import parse_duration
from nurture.content.experiments import (
    PICK_BY,
    Goal,
    IssueVariant,
    Variant,
    check_variants,
    did_you_mean,
    parse_share,
)
from nurture.content.sequences import explain_error
from nurture.content.topics import BROADCAST_TOPIC, Topics, topics_for
from nurture.content.yamlmarks import (
    DuplicateKey,
    Path_,
    RefusedYAML,
    explain,
    line_for,
    load_with_lines,
)
from nurture.delivery.compose import renderer_for
from nurture.errors import NurtureError
from nurture.settings import Settings

#: Front matter keys, with the type each must have.
FRONT_MATTER: dict[str, tuple[type, ...]] = {
    "subject": (str,),
    "segment": (str,),
    "send_at": (str, datetime, date),
    "local_time": (bool,),
    "archive": (bool,),
    "preheader": (str,),
    "slug": (str,),
    "topic": (str,),
    # an experiment (README, Experiments): as `broadcast send --test-share … --pick-after …
    # --by …`, which win over these
    "variants": (list,),
    "goal": (dict,),
    "test_share": (str,),
    "pick_after": (str,),
    "pick_by": (str,),
}
_JINJA = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.DOTALL)
_HOLE = "nurturejinja{}x"
_LONE_TAG = re.compile(r"<p>(nurturejinja\d+x)</p>\n?")
_SLUG = re.compile(r"[^a-z0-9]+")


class SourceError(NurtureError):
    """An issue that cannot be read: says which file and line, and how to fix it."""


@dataclass(frozen=True)
class Issue:
    """One newsletter issue as written, before it is scheduled."""

    source: str  # the file or template name, as the marketer gave it
    subject: str
    body_html: str  # a Jinja HTML fragment
    body_text: str | None  # a Jinja text twin, if any
    slug: str
    preheader: str | None = None
    segment: str | None = None
    send_at: str | datetime | date | None = None
    local_time: bool = False
    archive: bool = False
    #: The topic it belongs to (nurture.content.topics); None: BROADCAST_TOPIC.
    topic: str | None = None
    #: Lines before the body in the file, so a template error points at the right line.
    line_offset: int = 0
    #: An experiment: each reader gets one of the variants (`content/experiments.py`).
    variants: tuple[IssueVariant, ...] = ()
    goal: Goal | None = None
    #: The share that gets the variants first; the winner goes to the rest `pick_after`
    #: later, picked `pick_by` opens, clicks or conversions.
    test_share: float | None = None
    pick_after: timedelta | None = None
    pick_by: str | None = None


def markdown_to_html(markdown: str) -> str:
    """A Jinja HTML fragment from Markdown with Jinja tags in it."""
    held: list[str] = []

    def hold(match: re.Match[str]) -> str:
        held.append(match.group(0))
        return _HOLE.format(len(held) - 1)

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    html = md.render(_JINJA.sub(hold, markdown))
    # `{% if … %}` alone on a line would become a paragraph of its own
    html = _LONE_TAG.sub(
        lambda m: m.group(1) + "\n" if held[_index(m.group(1))].startswith("{%") else m.group(0),
        html,
    )
    return re.sub(r"nurturejinja(\d+)x", lambda m: held[int(m.group(1))], html)


def _index(hole: str) -> int:
    return int(hole.removeprefix("nurturejinja").removesuffix("x"))


def slugify(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:80] or "issue"


def _front_matter(
    text: str, shown: str, topics: Topics
) -> tuple[dict[str, Any], str, int, dict[Path_, int]]:
    """(front matter, body, lines before the body, the front matter's lines from 1) of a
    Markdown file."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text, 0, {}
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() in ("---", "...")), None)
    if end is None:
        raise SourceError(f"{shown}:1: the front matter starting with '---' is never closed")
    try:
        data, marks = load_with_lines("".join(lines[1:end]))
    except DuplicateKey as e:
        raise SourceError(f"{shown}:{e.line + 1}: '{e.key}' is given twice") from None
    except yaml.YAMLError as e:
        at, problem = explain(e)
        line = at + 1 if at is not None else 1
        what = "front matter" if isinstance(e, RefusedYAML) else "front matter is not valid YAML"
        raise SourceError(f"{shown}:{line}: {what}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SourceError(f"{shown}:2: front matter must be 'key: value' lines")
    for key, value in data.items():
        line = marks.get((key,), 1) + 1
        if key not in FRONT_MATTER:
            close = difflib.get_close_matches(str(key), FRONT_MATTER, 1)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f" (known: {', '.join(FRONT_MATTER)})"
            )
            raise SourceError(f"{shown}:{line}: unknown key '{key}'{hint}")
        if value is not None and not isinstance(value, FRONT_MATTER[key]):
            wanted = " or ".join(t.__name__ for t in FRONT_MATTER[key])
            raise SourceError(f"{shown}:{line}: '{key}' must be a {wanted}, got {value!r}")
        if key == "topic" and isinstance(value, str) and (why := topics.unknown(value)):
            raise SourceError(f"{shown}:{line}: topic: {why}")
    body = "".join(lines[end + 1 :])
    blank = len(body) - len(body.lstrip("\n"))  # blank lines between front matter and text
    return data, body.strip("\n") + "\n", end + 1 + blank, marks


def _markdown_file(settings: Settings, source: str) -> Path | None:
    for path in (Path(source), settings.workspace / source):
        if path.is_file():
            return path
    if source.endswith((".md", ".markdown")):
        raise SourceError(f"{source}: no such file")
    return None


def _template(settings: Settings, source: str) -> Issue:
    renderer = renderer_for(settings.templates_dir)
    env = renderer.env
    name = source.removesuffix(".html")
    try:
        html = env.loader.get_source(env, f"{name}.html")[0]  # type: ignore[union-attr]
    except jinja2.TemplateNotFound:
        raise SourceError(f"{source}: neither a Markdown file nor a template "
                          f"(expected templates/email/{name}.html){renderer.suggest(name)}") from None  # fmt: skip
    try:
        text: str | None = env.loader.get_source(env, f"{name}.txt")[0]  # type: ignore[union-attr]
    except jinja2.TemplateNotFound:
        text = None
    return Issue(source=source, subject="", body_html=html, body_text=text, slug=slugify(name))


class _Trial(BaseModel):
    """The front matter's experiment keys, checked as a sequence file's are."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    variants: tuple[Variant, ...] = ()
    goal: Goal | None = None


def _experiment(
    settings: Settings, data: dict[str, Any], marks: dict[Path_, int], shown: str
) -> dict[str, Any]:
    """The Issue fields of the front matter's experiment; SourceError at its line."""

    def fail(loc: tuple[Any, ...], message: str) -> SourceError:
        return SourceError(f"{shown}:{(line_for(marks, loc) or 0) + 1}: {message}")

    errors = [p for p in check_variants(data.get("variants"), marks, shown, ("variants",))
              if not p.warning]  # fmt: skip
    if errors:
        raise SourceError(f"{shown}:{(errors[0].line or 0) + 1}: {errors[0].message}")
    try:
        trial = _Trial.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise fail(first["loc"], explain_error(first)) from None
    found: dict[str, Any] = {"goal": trial.goal}
    for key, parse in (("test_share", parse_share), ("pick_after", parse_duration)):
        try:
            found[key] = parse(data[key]) if data.get(key) is not None else None
        except ValueError as e:
            raise fail((key,), f"{key}: {e}") from None
    by = data.get("pick_by")
    if by is not None and by not in PICK_BY:
        raise fail(("pick_by",), f"pick_by: {by!r} is not one of {', '.join(PICK_BY)}"
                   f"{did_you_mean(str(by), PICK_BY)}")  # fmt: skip
    found["pick_by"] = by
    variants = []
    for j, v in enumerate(trial.variants):
        html = text = None
        if v.template is not None:
            try:
                html, text = _body_of(settings, v.template)
            except SourceError as e:
                raise fail(("variants", j, "template"), f"variant {v.name}: {e}") from None
        variants.append(IssueVariant(**v.model_dump(), body_html=html, body_text=text))
    found["variants"] = tuple(variants)
    return found


def _body_of(settings: Settings, source: str) -> tuple[str, str | None]:
    """(HTML, text) of another issue file or template: a variant's body. Its front
    matter is not read (its own variants could name this file again)."""
    path = _markdown_file(settings, source)
    if path is None:
        issue = _template(settings, source)
        return issue.body_html, issue.body_text
    body = _front_matter(path.read_text(encoding="utf-8"), source, topics_for(settings.workspace))[
        1
    ]
    return markdown_to_html(body), body


def load_issue(settings: Settings, source: str, **overrides: Any) -> Issue:
    """Read SOURCE; keyword overrides (from the command line) win over front matter
    when they are not None."""
    topics = topics_for(settings.workspace)
    path = _markdown_file(settings, source)
    if path is None:
        issue = _template(settings, source)
    else:
        data, body, offset, marks = _front_matter(path.read_text(encoding="utf-8"), source, topics)
        # one name per file, however it was typed, so the same issue is not sent twice
        with contextlib.suppress(ValueError):
            source = str(path.resolve().relative_to(settings.workspace.resolve()))
        issue = Issue(
            source=source, subject=data.get("subject") or "", body_html=markdown_to_html(body),
            body_text=body, slug=slugify(data.get("slug") or path.stem),
            preheader=data.get("preheader"), segment=data.get("segment"),
            send_at=data.get("send_at"), local_time=bool(data.get("local_time")),
            archive=bool(data.get("archive")), line_offset=offset, topic=data.get("topic"),
            **_experiment(settings, data, marks, source),
        )  # fmt: skip
    issue = replace(issue, **{k: v for k, v in overrides.items() if v is not None})
    if not issue.subject.strip():
        where = "add 'subject:' to the front matter" if path else "give --subject"
        raise SourceError(f"{source}: the issue has no subject ({where})")
    if issue.topic is not None and (why := topics.unknown(issue.topic)):
        raise SourceError(f"{source}: --topic: {why}")  # the front matter's: at its line above
    if issue.topic is None and topics.on and BROADCAST_TOPIC not in topics.labels:
        raise SourceError(f"{source}: the issue names no topic, and [topics] does not declare "
                          f"the default one, {BROADCAST_TOPIC}: give --topic or topic: in the "
                          f"front matter (declared: {', '.join(topics.labels)})")  # fmt: skip
    return issue
