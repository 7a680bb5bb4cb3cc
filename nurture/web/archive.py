"""The public newsletter archive: a list, each issue's web version, and an Atom feed.

What an issue's web version holds, and which issues are listed, is
`nurture.broadcast.archive`'s; here it becomes a page or a feed.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET  # noqa: S405 - we write XML, we never parse it here
from datetime import datetime

from flask import Blueprint, Response, abort, g, render_template
from flask.typing import ResponseReturnValue

from nurture.broadcast.archive import ArchivedIssue, archived_issues, published_issue
from nurture.web.common import CSP, brand, settings

bp = Blueprint("archive", __name__)
ATOM = "http://www.w3.org/2005/Atom"


@bp.after_request
def _policy(response: Response) -> Response:
    """Issue pages may show images from anywhere (newsletters link them) and carry one
    style block, allowed by its nonce; everything else stays as strict as the app's."""
    if response.mimetype == "text/html":
        policy = CSP.replace("style-src 'self'", f"style-src 'self' 'nonce-{_nonce()}'")
        response.headers["Content-Security-Policy"] = policy.replace(
            "img-src 'self' data:", "img-src 'self' data: https:"
        )
    return response


def _nonce() -> str:
    if "archive_nonce" not in g:
        g.archive_nonce = secrets.token_urlsafe(16)
    return str(g.archive_nonce)


@bp.get("/archive")
def index() -> ResponseReturnValue:
    issues = [
        {"url": i.url, "subject": i.subject, "preheader": i.preheader, "at": i.published_at}
        for i in archived_issues(settings())
    ]
    return render_template("archive.html", issues=issues, csp_nonce=_nonce())


@bp.get("/archive/<slug>")
def issue(slug: str) -> ResponseReturnValue:
    found = published_issue(settings(), slug)
    if found is None:
        abort(404)
    return render_template("archive_issue.html", subject=found.subject, body=found.html,
                           at=found.published_at, listed=found.listed,
                           csp_nonce=_nonce())  # fmt: skip


@bp.get("/archive.atom")
def feed() -> ResponseReturnValue:
    """An Atom feed (RFC 4287) of the listed issues, with each one's full web version."""
    s = settings()
    issues = archived_issues(s, bodies=True)
    ET.register_namespace("", ATOM)
    root = ET.Element(f"{{{ATOM}}}feed")
    name = brand(s)
    _add(root, "id", f"{s.base_url}/archive")
    _add(root, "title", f"{name} newsletter")
    updated = max((i.updated_at for i in issues), default=None)
    _add(root, "updated", (updated or datetime.fromtimestamp(0).astimezone()).isoformat())
    ET.SubElement(root, f"{{{ATOM}}}link", rel="self", href=f"{s.base_url}/archive.atom")
    ET.SubElement(root, f"{{{ATOM}}}link", rel="alternate", href=f"{s.base_url}/archive")
    _add(ET.SubElement(root, f"{{{ATOM}}}author"), "name", name)
    for item in issues:
        _entry(root, item)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, mimetype="application/atom+xml")


def _entry(root: ET.Element, issue: ArchivedIssue) -> None:
    entry = ET.SubElement(root, f"{{{ATOM}}}entry")
    _add(entry, "id", issue.url)
    _add(entry, "title", issue.subject)
    _add(entry, "updated", issue.updated_at.isoformat())
    _add(entry, "published", issue.published_at.isoformat())
    ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=issue.url)
    if issue.preheader:
        _add(entry, "summary", issue.preheader)
    _add(entry, "content", str(issue.html)).set("type", "html")


def _add(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}")
    element.text = text
    return element
