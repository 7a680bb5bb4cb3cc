"""Newsletter test data: the example issue, subscribers by bulk insert, an issue file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, select

from nurture import clock
from nurture.cli import cli
from nurture.people.segments import audience_clause
from nurture.people.subscribers import email_hash
from nurture.store.engine import session_scope
from nurture.store.tables import Subscriber, Suppression, Tag
from tests.conftest import ROOT

ISSUE = ROOT / "newsletters" / "2026-12-monthly.md"


def add_people(settings, people: list[dict], tags: dict[str, list[str]] | None = None,
               suppressed: list[str] = ()) -> dict[str, int]:  # fmt: skip
    """Subscribers by bulk insert (no confirmation, no enrolment); returns email -> id."""
    now = clock.now()
    rows = [{"status": "active", "source": "import", "created_at": now, "attributes": {},
             "score": 0, **p} for p in people]  # fmt: skip
    with session_scope(settings) as session:
        session.execute(insert(Subscriber), rows)
        ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
        tag_rows = [
            {"subscriber_id": ids[e], "name": t} for e, ts in (tags or {}).items() for t in ts
        ]
        if tag_rows:
            session.execute(insert(Tag), tag_rows)
        if suppressed:
            session.execute(insert(Suppression), [
                {"email_hash": email_hash(e), "reason": "bounced", "at": now} for e in suppressed
            ])  # fmt: skip
    return ids


def chosen(settings, segment: str | None) -> list[str]:
    """Who a segment selects, by the part of their address before the @."""
    with session_scope(settings) as session:
        found = session.scalars(
            select(Subscriber.email)
            .where(audience_clause(settings, segment))
            .order_by(Subscriber.email)
        )
        return [email.split("@")[0] for email in found]


def issue_file(tmp_path: Path, front: str, body: str = "Hi {{ subscriber.first_name or 'there' }},\n\nNews.\n") -> Path:  # fmt: skip
    path = tmp_path / "issue.md"
    path.write_text(f"---\n{front}\n---\n{body}")
    return path


def invoke(runner, env, *args):
    return runner.invoke(cli, list(args), env=env, catch_exceptions=False)
