"""Segments: every term selects the right people on SQLite and PostgreSQL, and every
mistake says where it is and what would fix it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from nurture.content.sequences import catalog_for
from nurture.people.segments import AllOf, AnyOf, Not, SegmentError, Term, audience_clause, parse
from nurture.store.engine import session_scope
from nurture.store.tables import Enrollment
from tests.helpers.broadcast import add_people, chosen


@pytest.fixture
def people(settings) -> dict[str, int]:
    early, late = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)
    ids = add_people(
        settings,
        [
            {"email": "ana@example.com", "attributes": {"plan": "pro"}, "created_at": early},
            {"email": "bo@example.com", "attributes": {"plan": "pro plus"}, "created_at": late},
            {"email": "cy@example.com", "ready_at": late, "created_at": late},
            {"email": "di@example.com", "created_at": early},
            {"email": "ed@example.com", "created_at": early, "status": "unsubscribed"},
        ],
        tags={"ana@example.com": ["customers"], "bo@example.com": ["customers", "churned"],
              "cy@example.com": ["big spender"], "ed@example.com": ["customers"]},
    )  # fmt: skip
    seq = catalog_for(settings.sequences_dir).sequences["from-curious-to-customer"]
    sales = next(step.id for step in seq.steps if str(step.stage) == "sales")
    with session_scope(settings) as session:
        session.execute(insert(Enrollment), [
            {"subscriber_id": ids["ana@example.com"], "sequence": seq.name, "status": "active",
             "next_step_id": seq.steps[1].id, "enrolled_at": early},
            {"subscriber_id": ids["cy@example.com"], "sequence": seq.name, "status": "active",
             "next_step_id": sales, "enrolled_at": early},
            {"subscriber_id": ids["di@example.com"], "sequence": seq.name, "status": "completed",
             "enrolled_at": early},
        ])  # fmt: skip
    return ids


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        (None, ["ana", "bo", "cy", "di"]),  # every active subscriber
        ("tag:customers and not tag:churned", ["ana"]),
        ("TAG:Customers", ["ana", "bo"]),
        ('tag:"big spender"', ["cy"]),
        ("attr:plan=pro", ["ana"]),
        ('attr:plan="pro plus"', ["bo"]),
        ("attr:plan", ["ana", "bo"]),
        ("ready", ["cy"]),
        ("not ready", ["ana", "bo", "di"]),
        ("in:from-curious-to-customer", ["ana", "cy"]),
        ("completed:from-curious-to-customer", ["di"]),
        ("stage:sales", ["cy"]),
        ("stage:education", ["ana"]),
        ("signed_up_before:2026-06-01", ["ana", "di"]),
        ("signed_up_after:2026-06-01", ["bo", "cy"]),
        ("status:unsubscribed", []),  # broadcasts only ever go to active subscribers
        ("ready or (tag:customers and not tag:churned)", ["ana", "cy"]),
        ("not (tag:customers or ready) and signed_up_before:2026-06-01", ["di"]),
    ],
)
def test_each_term_selects_the_right_people(settings, people, segment, expected):
    assert chosen(settings, segment) == expected


def test_precedence_not_then_and_then_or():
    assert parse("not ready or tag:a and tag:b") == AnyOf((
        Not(Term("ready", None, 4)), AllOf((Term("tag", "a", 13), Term("tag", "b", 23))),
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("segment", "position", "message"),
    [
        ("", 1, "the segment is empty at position 1 (write a term such as tag:customers"),
        ("tags:customers", 1, "unknown term 'tags' at position 1 (did you mean 'tag'?)"),
        ("tag:a and", 10, "expected a term but found the end at position 10"),
        ("tag:a tag:b", 7, "unexpected 'tag:b' at position 7 (join terms with 'and' or 'or')"),
        ("(tag:a or tag:b", 16, "missing ')' at position 16 (to close the '(' at position 1)"),
        ("tag:a)", 6, "')' without a matching '(' at position 6"),
        ("ready:yes", 1, "'ready' takes no value at position 1 (write just 'ready')"),
        ("tag:", 1, "'tag' needs a value at position 1 (like tag:NAME)"),
        ('tag:"big', 1, 'a quote is not closed at position 1 (like tag:"big spender")'),
    ],
)
def test_syntax_errors_say_where_and_how_to_fix(segment, position, message):
    with pytest.raises(SegmentError) as caught:
        parse(segment)
    assert caught.value.position == position - 1
    assert message in str(caught.value)
    text, caret = str(caught.value).splitlines()[1:]
    assert text == f"  {segment}" and caret == "  " + " " * (position - 1) + "^"


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        (
            "in:nowhere",
            "no sequence named 'nowhere' at position 1 (known: from-curious-to-customer, win-back)",
        ),
        ("stage:closing", "no step has stage 'closing' at position 1 (known: education, sales)"),
        ("status:gone", "unknown status 'gone' at position 1 (known: pending, active"),
        (
            "tag:a and signed_up_before:june",
            "'june' is not a date at position 11 (write YYYY-MM-DD)",
        ),
        ("attr:=x", "'' is not an attribute name at position 1 (like attr:plan=pro)"),
    ],
)
def test_unknown_names_are_caught_when_compiling(settings, segment, message):
    with pytest.raises(SegmentError) as caught:
        audience_clause(settings, segment)
    assert message in str(caught.value)


def test_the_largest_segment_allowed_runs_on_the_database(settings, people):
    many = " or ".join(["tag:customers"] + [f"tag:t{i}" for i in range(199)])
    assert chosen(settings, many) == ["ana", "bo"]
    deep = "(" * 31 + "not " + "ready" + ")" * 31
    assert chosen(settings, deep) == ["ana", "bo", "di"]
