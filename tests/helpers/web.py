"""Signing up through the Flask test client and reading what it left: the people, their
first emails and the links in them."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from nurture import clock
from nurture.content.sequences import catalog_for
from nurture.journeys.scheduling import claim_due
from nurture.people.subscribers import add, get
from nurture.store.engine import session_scope
from nurture.store.tables import Subscriber

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
FORM = "application/x-www-form-urlencoded"


def drain(app) -> None:
    app.extensions["nurture"].background.drain()


def post_signup(client, app, json=False, **fields):
    data = {"email": "ana@example.com", **fields}
    response = (
        client.post("/subscribe", json=data) if json else client.post("/subscribe", data=data)
    )
    response.close()  # as a server does once the answer is sent: the email is handed on
    drain(app)
    return response


def link_in(received, kind: str) -> str:
    """The path of the first `/<kind>/` link in an email's text part."""
    text = received.message.get_body(("plain",)).get_content()
    return re.search(rf"https://crumb\.example(/{kind}/[\w.-]+)", text).group(1)


def count(settings, model, *where) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def subscriber(settings, email="ana@example.com") -> Subscriber:
    with session_scope(settings) as session:
        return get(session, email)


def confirmed(settings, email: str) -> Subscriber:
    with session_scope(settings) as session:
        sub, _ = add(session, catalog_for(settings.sequences_dir), email, clock.now(),
                     confirmed=True)  # fmt: skip
        return sub


def queued_welcome(settings, email="ana@example.com") -> Subscriber:
    """An active subscriber whose first email is queued (claimed, not yet sent)."""
    sub = confirmed(settings, email)
    with session_scope(settings) as session:
        claim_due(session, catalog_for(settings.sequences_dir), clock.now())
    return sub
