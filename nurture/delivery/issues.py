"""A broadcast (newsletter issue) email, and its web version, from its stored templates.

The email goes through the same pieces as a sequence email: the workspace's layout
(footer with unsubscribe link and postal address), link tracking and open pixel,
and the one message builder with its List-Unsubscribe headers. The web version is
the same fragment rendered for nobody in particular: no name, no address, no token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import jinja2
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.content.experiments import IssueExperiment, IssueVariant
from nurture.content.rendering import Renderer, SubscriberView
from nurture.content.topics import BROADCAST_TOPIC
from nurture.delivery.compose import Composed, MailingList, brand, sender_for, unsubscribe_url
from nurture.delivery.dkim import signer_for
from nurture.delivery.links import add_open_pixel, link_rewriter, open_url
from nurture.delivery.mime import build_message
from nurture.errors import TemplateError
from nurture.settings import Settings
from nurture.store.tables import Broadcast, Delivery, DeliveryKind

#: Every broadcast email is one mailing list, whatever its issue.
LIST_ID = "newsletter"
TEST_PREFIX = "[TEST] "
_EMAIL, _WEB = "_broadcast/email", "_broadcast/web"
_VIEW_ONLINE_HTML = (
    '<p class="view-online" style="margin:0 0 20px 0;font-size:13px;color:#7a6e62">'
    '<a href="{{ web_url }}">View this email in your browser</a></p>\n'
)
_VIEW_ONLINE_TEXT = "View this email in your browser: {{ web_url }}\n\n"
#: What the web version shows in place of a subscriber.
READER = SubscriberView(email="", first_name=None)


class Content(Protocol):
    """What an `Issue` (before scheduling) and a `Broadcast` row both have."""

    @property
    def slug(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def preheader(self) -> str | None: ...
    @property
    def body_html(self) -> str: ...
    @property
    def body_text(self) -> str | None: ...
    @property
    def topic(self) -> str | None: ...


class IssueRenderer(Renderer):
    """The workspace's renderer (layout, includes, sandbox) plus one issue's templates."""

    def __init__(self, templates_dir: Path, templates: dict[str, str]):
        super().__init__(templates_dir)
        assert self.env.loader is not None
        self.env.loader = jinja2.ChoiceLoader([jinja2.DictLoader(templates), self.env.loader])

    def sample(self) -> dict[str, Any]:
        web = "https://example.com/archive/example"
        return {**super().sample(), "broadcast": {"subject": "Example", "web_url": web},
                "web_url": web, "subscribe_url": "https://example.com/subscribe"}  # fmt: skip


def web_url(settings: Settings, broadcast: Broadcast) -> str:
    """Where the issue's web version is: linked from the email, listed in the archive."""
    return f"{settings.base_url}/archive/{broadcast.slug}"


@lru_cache(maxsize=16)
def issue_renderer(templates_dir: Path, html: str, text: str | None) -> IssueRenderer:
    templates = {f"{_EMAIL}.html": _VIEW_ONLINE_HTML + html, f"{_WEB}.html": html}
    if text is not None:
        templates[f"{_EMAIL}.txt"] = _VIEW_ONLINE_TEXT + text
    return IssueRenderer(templates_dir, templates)


def _context(
    settings: Settings, content: Content, view: SubscriberView, unsub: str, web: str
) -> dict[str, Any]:
    return {
        "subscriber": view,
        "unsubscribe_url": unsub,
        "postal_address": settings.postal_address or "",
        "broadcast": {"subject": content.subject, "web_url": web},
        "web_url": web,
        "subscribe_url": f"{settings.base_url}/subscribe",  # for readers of a forwarded copy
    }


def compose_issue(
    settings: Settings, content: Content, view: SubscriberView, subscriber_id: int, web: str,
    *, delivery_id: int | None = None, test: bool = False,
) -> Composed:  # fmt: skip
    sender = sender_for(settings)
    listed = MailingList.of(settings, content.topic or BROADCAST_TOPIC, LIST_ID,
                            f"{brand(sender)} newsletter")  # fmt: skip
    unsub = unsubscribe_url(settings, subscriber_id, None, view.link_key, listed.topic)
    subject = (TEST_PREFIX if test else "") + content.subject
    rewrite = link_rewriter(settings, delivery_id)
    rendered = issue_renderer(settings.templates_dir, content.body_html, content.body_text).render(
        _EMAIL, subject, _context(settings, content, view, unsub, web), brand=brand(sender),
        preheader=content.preheader or "", rewrite_link=rewrite,
    )  # fmt: skip
    if rewrite is not None and delivery_id is not None:
        pixel = open_url(settings, delivery_id)
        rendered = replace(rendered, html=add_open_pixel(rendered.html, pixel))
    envelope = build_message(
        sender=sender, to=view.email, subject=rendered.subject, html=rendered.html,
        text=rendered.text, list_id=listed.id, list_name=listed.name,
        unsubscribe_url=unsub, feedback=(content.slug, "newsletter", DeliveryKind.BROADCAST),
        signer=signer_for(settings),
    )  # fmt: skip
    return Composed(rendered, envelope)


@dataclass(frozen=True)
class VariantContent:
    """An issue as one of its variants sends it."""

    slug: str
    subject: str
    preheader: str | None
    body_html: str
    body_text: str | None
    topic: str | None


def as_variant(content: Content, variants: Sequence[IssueVariant], name: str | None) -> Content:
    """`content` as variant `name` sends it (as written when it has no such variant)."""
    v = next((v for v in variants if v.name == name), None)
    if v is None:
        return content
    body = (v.body_html, v.body_text) if v.body_html is not None else (
        content.body_html, content.body_text)  # fmt: skip
    return VariantContent(
        content.slug, v.subject or content.subject,
        v.preheader if v.preheader is not None else content.preheader, *body, content.topic,
    )  # fmt: skip


def broadcast_variants(broadcast: Broadcast) -> tuple[IssueVariant, ...]:
    """The variants a broadcast was scheduled with (none: not an experiment)."""
    if not broadcast.experiment:
        return ()
    return IssueExperiment.model_validate(broadcast.experiment).variants


def issues_of(session: Session, deliveries: list[Delivery]) -> dict[int, Broadcast]:
    """The broadcasts a group of deliveries belongs to, read once for the group and
    detached from the session, so composing after its transaction reads nothing more."""
    ids = {d.broadcast_id for d in deliveries if d.broadcast_id is not None}
    if not ids:
        return {}
    issues = list(session.scalars(select(Broadcast).where(Broadcast.id.in_(ids))))
    for issue in issues:
        session.expunge(issue)
    return {issue.id: issue for issue in issues}


def compose_broadcast(
    settings: Settings, broadcast: Broadcast | None, delivery: Delivery, view: SubscriberView
) -> Composed:
    """The email of one broadcast delivery (`broadcast`: its issue, None if it is gone),
    as the delivery's variant sends it; what a worker sends."""
    if broadcast is None:
        raise TemplateError(f"broadcast #{delivery.broadcast_id} no longer exists")
    content = as_variant(broadcast, broadcast_variants(broadcast), delivery.variant)
    return compose_issue(
        settings, content, view, delivery.subscriber_id, web_url(settings, broadcast),
        delivery_id=delivery.id, test=delivery.is_test,
    )  # fmt: skip


@dataclass(frozen=True)
class WebVersion:
    subject: str
    html: Markup


def render_web(settings: Settings, content: Content, web: str, *, body: bool = True) -> WebVersion:
    """The issue as a page shows it: nothing personal, no tracking. `body=False` renders
    the subject only, for lists."""
    renderer = issue_renderer(settings.templates_dir, content.body_html, content.body_text)
    context = _context(settings, content, READER, "", web)
    try:
        subject = renderer.env.from_string(content.subject).render(context)
        html = renderer.env.get_template(f"{_WEB}.html").render(context) if body else ""
    except jinja2.TemplateError as e:
        raise TemplateError(f"web version: {e}") from e
    # the subject is autoescaped like any string template: make it plain text again
    plain = Markup(" ".join(subject.split())).unescape()  # noqa: S704 - unescaped, not trusted
    return WebVersion(plain, Markup(html))  # noqa: S704 - our own sandbox's autoescaped output
