"""A public signup runs the same statements whatever is known about the address, and
still follows the rules: one confirmation an hour, nothing for active, bounced or
forgotten people, tags only for new ones. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from nurture import clock
from nurture.content.sequences import catalog_for
from nurture.people.signups import request_signup
from nurture.people.subscribers import (
    SIGNUP_SEQUENCE,
    ConsentInfo,
    add,
    bounce,
    forget,
    get,
    unsubscribe,
)
from nurture.store import engine as db
from nurture.store.engine import session_scope
from nurture.store.tables import Consent, Delivery, Subscriber, SubscriberStatus, Tag

FORM = ConsentInfo(source="form", ip="127.0.0.1", user_agent="test", form="/subscribe")
HOUR = timedelta(hours=1)


def people(settings) -> dict[str, str]:
    """One address in each state a form can meet; returns state -> address."""
    catalog, now = catalog_for(settings.sequences_dir), clock.now()
    with session_scope(settings) as session:
        add(session, catalog, "pending@example.com", now - timedelta(minutes=5))
        old, _ = add(session, catalog, "pending-old@example.com", now - 2 * HOUR)
        add(session, catalog, "active@example.com", now, confirmed=True)
        gone, _ = add(session, catalog, "gone@example.com", now, confirmed=True)
        unsubscribe(session, gone, now)
        bounced, _ = add(session, catalog, "bounced@example.com", now, confirmed=True)
        bounce(session, bounced, now, "550 no such user")
        forgotten, _ = add(session, catalog, "forgotten@example.com", now, confirmed=True)
        forget(session, forgotten, now)
    return {
        "new": "new@example.com", "pending": "pending@example.com",
        "pending an hour ago": "pending-old@example.com", "active": "active@example.com",
        "unsubscribed": "gone@example.com", "bounced": "bounced@example.com",
        "forgotten": "forgotten@example.com",
    }  # fmt: skip


def signup(settings, address: str, **form) -> int | None:
    return request_signup(db.get_engine(settings), address, clock.now(), consent=FORM, **form)


def statements_of(settings, address: str, **form) -> list[str]:
    seen: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    engine = db.get_engine(settings)
    event.listen(engine, "before_cursor_execute", record)
    try:
        signup(settings, address, **form)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def count(settings, model, *where) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.mark.parametrize("form", [{}, {"sequence": "from-curious-to-customer", "tags": ["web"]}])
def test_every_address_costs_the_same_statements(settings, form):
    addresses = people(settings)
    runs = {state: statements_of(settings, address, **form) for state, address in addresses.items()}
    assert len({tuple(statements) for statements in runs.values()}) == 1, runs
    # PostgreSQL: one statement (WITH … INSERT …); SQLite: the same steps one by one
    one = settings.database_url.startswith("postgresql")
    assert len(runs["new"]) == (1 if one else 4 + bool(form))  # + BEGIN IMMEDIATE


def test_each_address_gets_what_the_rules_say(settings):
    addresses = people(settings)
    queued = {state: signup(settings, address) is not None for state, address in addresses.items()}
    assert queued == {
        "new": True, "pending": False, "pending an hour ago": True, "active": False,
        "unsubscribed": True, "bounced": False, "forgotten": False,
    }  # fmt: skip
    with session_scope(settings) as session:
        status = {s: get(session, a).status for s, a in addresses.items() if s != "forgotten"}
        requested = dict(session.execute(
            select(Subscriber.email, func.count(Consent.id)).join(Consent)
            .where(Consent.action == "requested").group_by(Subscriber.email)).all())  # fmt: skip
    assert status == {
        "new": "pending", "pending": "pending", "pending an hour ago": "pending",
        "active": "active", "unsubscribed": "pending", "bounced": "bounced",
    }  # fmt: skip
    # a consent for each signup that sent a confirmation, besides each one's first
    assert requested == {
        "new@example.com": 1, "pending@example.com": 1, "pending-old@example.com": 2,
        "active@example.com": 1, "gone@example.com": 2, "bounced@example.com": 1,
    }  # fmt: skip
    assert count(settings, Subscriber, Subscriber.email == "forgotten@example.com") == 0
    # at most one confirmation an hour, however often the form is sent
    assert [signup(settings, addresses[s]) for s in ("new", "unsubscribed")] == [None, None]


def test_tags_are_for_new_people_and_the_sequence_waits_for_a_due_confirmation(settings):
    addresses = people(settings)
    sequence = "from-curious-to-customer"
    for state in ("new", "active", "pending"):
        signup(settings, addresses[state], tags=["web", "Bakery "], sequence=sequence)
    with session_scope(settings) as session:
        tags = session.execute(select(Subscriber.email, Tag.name).join(Tag)
                               .order_by(Tag.name)).all()  # fmt: skip
        remembered = {s: (get(session, addresses[s]).attributes or {}).get(SIGNUP_SEQUENCE)
                      for s in ("new", "active", "pending")}  # fmt: skip
    assert tags == [("new@example.com", "bakery"), ("new@example.com", "web")]
    assert remembered == {"new": sequence, "active": None, "pending": None}
    with session_scope(settings) as session:  # an hour later the pending one may ask again
        session.execute(update(Subscriber).where(Subscriber.email == addresses["pending"])
                        .values(confirmation_sent_at=clock.now() - 2 * HOUR))  # fmt: skip
    assert signup(settings, addresses["pending"], sequence=sequence) is not None
    with session_scope(settings) as session:
        attributes = get(session, addresses["pending"]).attributes
    assert attributes[SIGNUP_SEQUENCE] == sequence


def test_the_same_new_address_twice_at_once_makes_one_subscriber_and_one_email(settings):
    barrier, results, errors = threading.Barrier(4), [], []

    def post() -> None:
        try:
            barrier.wait()
            results.append(signup(settings, "twice@example.com"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len([r for r in results if r is not None]) == 1
    assert count(settings, Subscriber) == 1
    assert count(settings, Delivery, Delivery.kind == "confirm") == 1
    with session_scope(settings) as session:
        assert get(session, "twice@example.com").status == SubscriberStatus.PENDING
