"""The public archive's data: issues that went out, as their web versions show them.

A web version is the issue rendered for nobody in particular: no name, no address, no
unsubscribe token, no tracking. Issues marked `archive` are listed (page and feed);
the others are reachable only from their own emails (their address has a random part).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup

from nurture.broadcast.compose import render_web
from nurture.broadcast.core import web_url
from nurture.broadcast.report import archived, published
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast

#: Issues listed on the page and in the feed.
LATEST = 50


@dataclass(frozen=True)
class ArchivedIssue:
    url: str
    subject: str
    preheader: str | None
    #: When it started going out, and when it finished (its start while still sending).
    published_at: datetime
    updated_at: datetime
    #: Listed on the archive page and in the feed (marked `archive`).
    listed: bool
    #: The web version's page; empty when only the list was asked for.
    html: Markup


def _web_version(settings: Settings, broadcast: Broadcast, *, body: bool) -> ArchivedIssue:
    url = web_url(settings, broadcast)
    page = render_web(settings, broadcast, url, body=body)
    assert broadcast.started_at is not None  # the queries return only issues that started
    return ArchivedIssue(
        url=url, subject=page.subject, preheader=broadcast.preheader,
        published_at=broadcast.started_at,
        updated_at=broadcast.finished_at or broadcast.started_at,
        listed=bool(broadcast.archive), html=page.html,
    )  # fmt: skip


def archived_issues(
    settings: Settings, limit: int = LATEST, *, bodies: bool = False
) -> list[ArchivedIssue]:
    """The listed issues, newest first; with `bodies`, each one's whole web version (the
    feed), else its subject only (the page)."""
    with session_scope(settings) as session:
        rows = archived(session, limit)
    return [_web_version(settings, b, body=bodies) for b in rows]


def published_issue(settings: Settings, slug: str) -> ArchivedIssue | None:
    """The web version at /archive/SLUG, of any issue that went out, listed or not."""
    with session_scope(settings) as session:
        found = published(session, slug)
    return None if found is None else _web_version(settings, found, body=True)
