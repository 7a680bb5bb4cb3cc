"""The public newsletter archive: a list, each issue's web version, and an Atom feed.

A web version is the issue rendered for nobody in particular: no name, no address, no
unsubscribe token, no tracking. Issues marked `archive` are listed and in the feed;
the others are reachable only from their own emails (their address has a random part).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET  # noqa: S405 - we write XML, we never parse it here
from datetime import datetime

from flask import Blueprint, Response, abort, g, render_template
from flask.typing import ResponseReturnValue

from nurture.broadcast.compose import render_web
from nurture.broadcast.core import web_url
from nurture.broadcast.report import archived, published
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast
from nurture.web.common import brand, settings

bp = Blueprint("archive", __name__)
ATOM = "http://www.w3.org/2005/Atom"
#: Issues listed on the page and in the feed.
LATEST = 50


@bp.after_request
def _policy(response: Response) -> Response:
    """Issue pages may show images from anywhere (newsletters link them) and carry one
    style block, allowed by its nonce; everything else stays as strict as the app's."""
    if response.mimetype == "text/html":
        from nurture.web import CSP

        policy = CSP.replace("style-src 'self'", f"style-src 'self' 'nonce-{_nonce()}'")
        response.headers["Content-Security-Policy"] = policy.replace(
            "img-src 'self' data:", "img-src 'self' data: https:"
        )
    return response


def _nonce() -> str:
    if "archive_nonce" not in g:
        g.archive_nonce = secrets.token_urlsafe(16)
    return str(g.archive_nonce)


def _when(broadcast: Broadcast) -> datetime:
    assert broadcast.started_at is not None
    return broadcast.started_at


@bp.get("/archive")
def index() -> ResponseReturnValue:
    s = settings()
    with session_scope(s) as session:
        rows = archived(session, LATEST)
    issues = [
        {"url": web_url(s, b), "subject": render_web(s, b, web_url(s, b), body=False).subject,
         "preheader": b.preheader, "at": _when(b)}
        for b in rows
    ]  # fmt: skip
    return render_template("archive.html", issues=issues, csp_nonce=_nonce())


@bp.get("/archive/<slug>")
def issue(slug: str) -> ResponseReturnValue:
    s = settings()
    with session_scope(s) as session:
        found = published(session, slug)
    if found is None:
        abort(404)
    page = render_web(s, found, web_url(s, found))
    return render_template("archive_issue.html", subject=page.subject, body=page.html,
                           at=_when(found), listed=found.archive, csp_nonce=_nonce())  # fmt: skip


@bp.get("/archive.atom")
def feed() -> ResponseReturnValue:
    """An Atom feed (RFC 4287) of the listed issues, with each one's full web version."""
    s = settings()
    with session_scope(s) as session:
        rows = archived(session, LATEST)
    ET.register_namespace("", ATOM)
    root = ET.Element(f"{{{ATOM}}}feed")
    name = brand(s)
    _add(root, "id", f"{s.base_url}/archive")
    _add(root, "title", f"{name} newsletter")
    updated = max((_updated(b) for b in rows), default=None)
    _add(root, "updated", (updated or datetime.fromtimestamp(0).astimezone()).isoformat())
    ET.SubElement(root, f"{{{ATOM}}}link", rel="self", href=f"{s.base_url}/archive.atom")
    ET.SubElement(root, f"{{{ATOM}}}link", rel="alternate", href=f"{s.base_url}/archive")
    _add(ET.SubElement(root, f"{{{ATOM}}}author"), "name", name)
    for b in rows:
        url = web_url(s, b)
        page = render_web(s, b, url)
        entry = ET.SubElement(root, f"{{{ATOM}}}entry")
        _add(entry, "id", url)
        _add(entry, "title", page.subject)
        _add(entry, "updated", _updated(b).isoformat())
        _add(entry, "published", _when(b).isoformat())
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=url)
        if b.preheader:
            _add(entry, "summary", b.preheader)
        _add(entry, "content", str(page.html)).set("type", "html")
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, mimetype="application/atom+xml")


def _updated(broadcast: Broadcast) -> datetime:
    return broadcast.finished_at or _when(broadcast)


def _add(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}")
    element.text = text
    return element
