"""Sunset test data: a [sunset] policy in the workspace, a reader (or a scanner) opening
or clicking an email the sink received, and a whole list of mixed activity by bulk
insert."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import insert, select

from nurture.cli import cli
from nurture.store.engine import session_scope
from nurture.store.tables import Event, Subscriber
from tests.helpers.journeys import BROWSER

#: Apple Mail Privacy Protection's prefetch: every image fetched, nobody reading.
PREFETCH = "Mozilla/5.0"


def with_policy(workspace: Path, **keys: str) -> None:
    """Append a [sunset] table of `keys` (values written as TOML strings)."""
    lines = "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    path = workspace / "nurture.toml"
    path.write_text(path.read_text() + "\n[sunset]\n" + lines)


def invoke(runner: CliRunner, env: dict[str, str], *args: str) -> str:
    result = runner.invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def track(client, received, kind: str, agent: str = BROWSER) -> None:
    """Open (the pixel) or click (the first tracked link of) an email, as `agent`."""
    html = received.message.get_body(("html",)).get_content()
    mark = "o" if kind == "open" else "c"
    path = re.search(rf'(?:src|href)="https://crumb\.example(/{mark}/[^"]+)"', html).group(1)
    answer = client.get(path, headers={"User-Agent": agent})
    assert answer.status_code in (200, 302)


def subjects(sink, address: str) -> list[str]:
    return [m.message["Subject"] for m in sink.to(address)]


@dataclass(frozen=True)
class Person:
    """One of a mixed list: how they joined and what they did, and whether a sunset at
    `now` with `inactive_for` must move them."""

    email: str
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    #: (kind, at, bot) of each open or click.
    events: tuple[tuple[str, datetime, bool], ...]
    inactive: bool


def mixed_list(n: int, now: datetime, inactive_for: timedelta) -> list[Person]:
    """`n` people in twelve kinds, the kind by id modulo 12: silent since joining long
    ago, opened or clicked lately, opened only before the cutoff, opened only by a
    prefetcher or a scanner lately, joined lately, confirmed again lately, unsubscribed,
    pending, and engaged a minute either side of the cutoff."""
    cutoff, long_ago = now - inactive_for, now - inactive_for - timedelta(days=200)
    kinds = [
        ("active", long_ago, (), True),  # never opened anything
        ("active", long_ago, (("open", now - timedelta(days=3), False),), False),
        ("active", long_ago, (("click", now - timedelta(days=60), False),), False),
        ("active", long_ago, (("open", cutoff - timedelta(days=1), False),), True),
        ("active", long_ago, (("open", now - timedelta(days=1), True),), True),  # a bot
        ("active", long_ago, (("click", now - timedelta(days=2), True),), True),  # a scanner
        ("active", now - timedelta(days=30), (), False),  # new: not sunset on day one
        ("unsubscribed", long_ago, (), False),
        ("pending", long_ago, (), False),
        ("active", long_ago, (("open", cutoff + timedelta(minutes=1), False),), False),
        (
            "active",
            long_ago,
            (
                ("click", cutoff - timedelta(minutes=1), False),
                ("open", cutoff - timedelta(days=90), False),
            ),
            True,
        ),  # fmt: skip
        ("reconfirmed", long_ago, (), False),  # left, came back and confirmed lately
    ]
    people = []
    for i in range(n):
        status, joined, events, silent = kinds[i % len(kinds)]
        confirmed = now - timedelta(days=10) if status == "reconfirmed" else joined
        people.append(Person(
            email=f"p{i:05d}@example.com", status="active" if status == "reconfirmed" else status,
            created_at=joined, confirmed_at=None if status == "pending" else confirmed,
            events=events, inactive=silent,
        ))  # fmt: skip
    return people


def insert_people(settings, people: list[Person]) -> dict[str, int]:
    """The list and its events, by bulk insert; returns email -> id."""
    rows = [{"email": p.email, "status": p.status, "source": "import", "attributes": {},
             "score": 0, "created_at": p.created_at, "confirmed_at": p.confirmed_at,
             "link_key": f"k{i:015d}"} for i, p in enumerate(people)]  # fmt: skip
    with session_scope(settings) as session:
        session.execute(insert(Subscriber), rows)
        ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
        events = [{"subscriber_id": ids[p.email], "kind": kind, "at": at, "bot": bot,
                   "data": {}} for p in people for kind, at, bot in p.events]  # fmt: skip
        session.execute(insert(Event), events)
    return ids
