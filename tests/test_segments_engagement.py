"""Engagement terms in segments (`opened:30d`, `clicked:90d`, `inactive:120d`,
`step:welcome:clicked`) select the right people on SQLite and PostgreSQL, leave bots'
opens out, and say what is wrong with a name that does not exist."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import insert

from nurture.people.segments import SegmentError, audience_clause
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event
from tests.helpers.broadcast import add_people, chosen

NOW = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=300)


@pytest.fixture
def people(settings) -> None:
    """ana opened the welcome 10 days ago; bo clicked it 60 days ago; cy's welcome was
    only clicked by a link scanner; di never opened anything; ed joined 10 days ago."""
    ids = add_people(settings, [
        {"email": f"{name}@example.com", "created_at": LONG_AGO, "confirmed_at": LONG_AGO}
        for name in ("ana", "bo", "cy", "di")
    ] + [{"email": "ed@example.com", "created_at": NOW - timedelta(days=10)}])  # fmt: skip
    with session_scope(settings) as session:
        sent = {name: session.scalar(insert(Delivery).values(
            subscriber_id=ids[f"{name}@example.com"], kind="sequence", status="sent",
            sequence="from-curious-to-customer", step_id="welcome", sent_at=LONG_AGO,
        ).returning(Delivery.id)) for name in ("ana", "bo", "cy")}  # fmt: skip
        session.execute(insert(Event), [
            {"subscriber_id": ids["ana@example.com"], "delivery_id": sent["ana"], "kind": "open",
             "at": NOW - timedelta(days=10), "bot": False, "data": {}},
            {"subscriber_id": ids["bo@example.com"], "delivery_id": sent["bo"], "kind": "click",
             "at": NOW - timedelta(days=60), "bot": False, "data": {}},
            {"subscriber_id": ids["cy@example.com"], "delivery_id": sent["cy"], "kind": "click",
             "at": NOW - timedelta(days=1), "bot": True, "data": {}},
        ])  # fmt: skip


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("opened:30d", ["ana"]),
        ("opened:90d", ["ana", "bo"]),  # a click proves the email was opened
        ("clicked:90d", ["bo"]),  # cy's click was a scanner's
        ("not opened:30d", ["bo", "cy", "di", "ed"]),  # never opening counts as not opening
        ("inactive:120d", ["cy", "di"]),  # ed joined 10 days ago: not inactive yet
        ("inactive:30d", ["bo", "cy", "di"]),
        ("step:welcome:sent", ["ana", "bo", "cy"]),
        ("step:welcome:opened", ["ana", "bo"]),
        ("step:welcome:clicked", ["bo"]),
        ("step:from-curious-to-customer:welcome:clicked", ["bo"]),
        ("step:win-back:welcome:sent", None),  # no such step there: an error, below
        ("not step:welcome:opened and not inactive:120d", ["ed"]),
    ],
)
def test_engagement_terms_select_the_right_people(settings, people, segment, expected):
    with freeze_time(NOW):
        if expected is None:
            with pytest.raises(SegmentError):
                chosen(settings, segment)
            return
        assert chosen(settings, segment) == expected


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ("step:welcom:clicked", "no step 'welcom' at position 1 (did you mean 'welcome'?)"),
        ("step:welcome:clickd", "no action 'clickd' at position 1 (did you mean 'clicked'?)"),
        ("step:from-curious:welcome:opened",
         "no sequence 'from-curious' at position 1 (did you mean 'from-curious-to-customer'?)"),
        ("step:win-back:welcome:sent",
         "no step 'welcome' at position 1 (known: best-of, last-call, still-with-us)"),
        ("step:welcome", "'welcome' is not STEP:ACTION at position 1 (like step:welcome:clicked"),
        ("opened:30x", "bad duration '30x' at position 1 (like opened:30d)"),
        ("tag:a or inactiv:120d", "unknown term 'inactiv' at position 10 (did you mean 'inactive'?)"),
    ],
)  # fmt: skip
def test_a_wrong_engagement_term_says_what_would_fix_it(settings, segment, message):
    with pytest.raises(SegmentError) as caught:
        audience_clause(settings, segment)
    assert message in str(caught.value)
