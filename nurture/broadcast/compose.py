"""Checking a newsletter issue before it is scheduled; the email and its web version
are composed in delivery/issues.py, where the worker composes them."""

from __future__ import annotations

import jinja2

from nurture.broadcast.source import SourceError
from nurture.content.rendering import sample_context
from nurture.delivery.issues import Content, compose_issue, issue_renderer, render_web
from nurture.errors import TemplateError
from nurture.settings import Settings

__all__ = ["check_issue", "compose_issue", "render_web"]


def check_issue(settings: Settings, content: Content, source: str, line_offset: int) -> None:
    """Render the issue for a sample subscriber and for the web; SourceError on a problem,
    with the line in the file when Jinja knows it."""
    renderer = issue_renderer(settings.templates_dir, content.body_html, content.body_text)
    if content.body_text is not None:
        try:
            renderer.env.parse(content.body_text)
        except jinja2.TemplateSyntaxError as e:
            raise SourceError(f"{source}:{(e.lineno or 1) + line_offset}: {e.message}") from None
    try:
        compose_issue(settings, content, sample_context()["subscriber"], 0, "https://example.com")
        render_web(settings, content, "https://example.com")
    except TemplateError as e:
        raise SourceError(f"{source}: {e}") from None
