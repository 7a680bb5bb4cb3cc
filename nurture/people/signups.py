"""A signup from the public form: the same statements, in the same order, whatever the
database knows about the address.

Why: the form answers the same for a new, pending, active, unsubscribed or suppressed
address, so that nobody can learn who is subscribed, and its *time* must not tell
either. Branching on what the database held did: a new address cost a dozen ORM round
trips, a known one a single SELECT (4.3 ms against 0.8 ms of CPU on PostgreSQL,
measured), which a 0.2 s floor then had to hide, at 0.2 s a signup. Here the rules are
written into the statements, and every signup runs, in one transaction:

1. INSERT the subscriber, pending and sent a confirmation now, unless the address is
   suppressed; ON CONFLICT (email) DO UPDATE the known row, to pending and "sent now"
   where a confirmation is due, else to the values it has; RETURNING the row either
   way, locked (a concurrent signup of the same address waits for this one)
2. INSERT a consent ... WHERE a confirmation is due: 0 or 1 row
3. INSERT the confirmation delivery ... WHERE it is due, RETURNING its id: 0 or 1 row
4. only when the form names a sequence, topics or tags (the input, never the address):
   UPDATE the remembered sequence and topic choice WHERE due, INSERT the tags WHERE the
   subscriber is new

and the caller enqueues one message either way, naming the delivery or nothing. What
still differs is how many rows the database writes, microseconds inside a round trip.

A confirmation is due for a new address, and for a pending or unsubscribed one whose
last confirmation is CONFIRMATION_RESEND_AFTER old; that signup is recorded in the
consent ledger and the subscriber becomes pending; one who had unsubscribed also gets a
new link key, so links from before they left act no more (tokens.Claim). Active, bounced and suppressed
addresses get nothing, and a form never edits a known person otherwise.

Core statements built once, on a plain connection (db.transaction): an ORM Session and
its unit of work cost more per signup than the database did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Engine,
    Executable,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ColumnElement, FromClause

from nurture.content.topics import topics_for
from nurture.people.preferences import SIGNUP_TOPICS, choice_text
from nurture.people.subscribers import (
    CONFIRMATION_RESEND_AFTER,
    SIGNUP_SEQUENCE,
    ConsentInfo,
    clean_first_name,
    email_hash,
)
from nurture.people.tags import tag_names
from nurture.settings import Settings
from nurture.store.counters import DatabaseCounts
from nurture.store.engine import get_engine
from nurture.store.tables import (
    Consent,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    Tag,
    UTCDateTime,
    new_link_key,
)

_SUBSCRIBERS = cast(Table, Subscriber.__table__)
_SUPPRESSIONS = cast(Table, Suppression.__table__)
_CONSENTS = cast(Table, Consent.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)
_TAGS = cast(Table, Tag.__table__)
_NOW = bindparam("now", type_=UTCDateTime())


def _p(name: str, kind: Any) -> Any:
    return bindparam(name, type_=kind)


def _remembered(
    dialect: str, attributes: ColumnElement[Any], key: str, value: ColumnElement[Any]
) -> ColumnElement[Any]:
    """The subscriber's attributes with `key` set to what this signup asked for."""
    if dialect == "postgresql":
        merged = attributes.cast(postgresql.JSONB).op("||")(
            func.jsonb_build_object(literal(key), value)
        )
        return merged.cast(JSON)
    return func.json_set(attributes, literal(f"$.{key}"), value)


def _upsert(dialect: str) -> Any:
    """1. The subscriber: inserted pending and "sent a confirmation now" unless the address
    is suppressed, or the known row made pending and "sent now" where a confirmation is
    due, else left as it is (a write all the same, which also locks it)."""
    s, insert = _SUBSCRIBERS, postgresql.insert if dialect == "postgresql" else sqlite.insert
    new = select(
        _p("email", String), _p("first_name", String), _p("timezone", String),
        _p("attributes", JSON), literal(SubscriberStatus.PENDING, String),
        _p("source", String), _NOW, _NOW, literal(0, Integer), _p("key", String),
    ).where(~exists().where(_SUPPRESSIONS.c.email_hash == _p("hash", String)))  # fmt: skip
    columns = ["email", "first_name", "timezone", "attributes", "status", "source",
               "created_at", "confirmation_sent_at", "score", "link_key"]  # fmt: skip
    statuses = [literal(SubscriberStatus.PENDING), literal(SubscriberStatus.UNSUBSCRIBED)]
    due = and_(s.c.status.in_(statuses),
               or_(s.c.confirmation_sent_at.is_(None),
                   s.c.confirmation_sent_at <= _p("resend_before", UTCDateTime())))  # fmt: skip
    sequence, topics = _p("sequence", String), _p("topics", String)
    # The sequence and the topics asked for, kept until confirmation (when one is due).
    attributes: ColumnElement[Any] = case(
        (
            and_(due, sequence.is_not(None)),
            _remembered(dialect, s.c.attributes, SIGNUP_SEQUENCE, sequence),
        ),
        else_=s.c.attributes,
    )
    attributes = case(
        (and_(due, topics.is_not(None)), _remembered(dialect, attributes, SIGNUP_TOPICS, topics)),
        else_=attributes,
    )
    # Subscribing again after leaving: links from before act no more (tokens.Claim).
    rejoin = and_(due, s.c.status == literal(SubscriberStatus.UNSUBSCRIBED))
    known = {
        "status": case((due, literal(SubscriberStatus.PENDING, String)), else_=s.c.status),
        "confirmation_sent_at": case((due, _NOW), else_=s.c.confirmation_sent_at),
        "attributes": attributes,
        "link_key": case((rejoin, _p("key", String)), else_=s.c.link_key),
    }  # fmt: skip
    return (
        insert(s)
        .from_select(columns, new)
        .on_conflict_do_update(index_elements=["email"], set_=known)
    )


def _consent(row: FromClause) -> Any:
    """2. The consent ledger's record of a signup that sends a confirmation."""
    return _CONSENTS.insert().from_select(
        [
            "subscriber_id",
            "action",
            "at",
            "source",
            "ip",
            "user_agent",
            "form",
            "wording",
            "topics",
        ],
        select(
            row.c.id,
            literal("requested", String),
            _NOW,
            _p("source", String),
            _p("ip", String),
            _p("user_agent", String),
            _p("form", String),
            _p("wording", Text),
            _p("agreed", Text),
        ).where(row.c.confirmation_sent_at == _NOW),  # fmt: skip
    )


def _delivery(row: FromClause) -> Any:
    """3. The confirmation email, queued."""
    columns = ["subscriber_id", "kind", "status", "attempts", "is_test", "created_at",
               "enqueued_at"]  # fmt: skip
    return (
        _DELIVERIES.insert()
        .from_select(
            columns,
            select(
                row.c.id,
                literal(DeliveryKind.CONFIRM, String),
                literal(DeliveryStatus.QUEUED, String),
                literal(0, Integer),
                literal(False, Boolean),
                _NOW,
                _NOW,
            ).where(row.c.confirmation_sent_at == _NOW),
        )  # fmt: skip
        .returning(_DELIVERIES.c.id)
    )


def _tags(dialect: str, row: FromClause, names: ColumnElement[Any]) -> Any:
    """4. The form's tags, for a subscriber this signup created."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(_TAGS)
        .from_select(
            ["subscriber_id", "name"], select(row.c.id, names).where(row.c.created_at == _NOW)
        )  # fmt: skip
        .on_conflict_do_nothing(index_elements=["subscriber_id", "name"])
    )


@dataclass(frozen=True)
class _Statements:
    """One statement on PostgreSQL; on SQLite (no writes in a WITH) the same steps."""

    steps: tuple[Executable, ...]
    tags: Executable | None = None


@cache
def _statements(dialect: str) -> _Statements:
    s = _SUBSCRIBERS
    if dialect != "postgresql":
        # Each step finds the row by its address; "due" is still the row's own mark.
        row = select(s.c.id, s.c.confirmation_sent_at, s.c.created_at).where(
            s.c.email == _p("email", String)
        ).subquery("signup")  # fmt: skip
        return _Statements(
            steps=(_upsert(dialect), _consent(row), _delivery(row)),
            tags=_tags(dialect, row, _p("name", String)),
        )
    row = _upsert(dialect).returning(s.c.id, s.c.confirmation_sent_at, s.c.created_at).cte("signup")
    consent = _consent(row).cte("consent")
    delivery = _delivery(row).cte("delivery")
    tags = _tags(dialect, row, func.unnest(_p("names", postgresql.ARRAY(String)))).cte("tags")
    return _Statements(steps=(select(delivery.c.id).add_cte(consent, tags),))


def request_signup(
    engine: Engine, address: str, now: datetime, *, consent: ConsentInfo,
    first_name: str | None = None, timezone: str | None = None, tags: list[str] | None = None,
    sequence: str | None = None, attributes: dict[str, str] | None = None,
    topics: tuple[list[str], list[str]] | None = None,
) -> int | None:  # fmt: skip
    """Sign `address` up from a public form, in a transaction of its own; returns the
    confirmation delivery to send, if one is due.

    `address` is normalised (subscribers.normalize_email), `timezone` checked and
    `sequence` known, `attributes` are checked `signup_fields`: the form's parser did
    that. They are written for a new subscriber only, like the first name. `topics`,
    (agreed, left unticked) when the form offered some, is remembered like `sequence`
    until confirmation and its agreed topics recorded with the consent. The caller
    answers the same whatever this returns, and enqueues one message either way.
    """
    names = tag_names(tags or [])
    choice = choice_text(*topics) if topics is not None else None
    params = {
        "email": address, "hash": email_hash(address), "now": now,
        "resend_before": now - CONFIRMATION_RESEND_AFTER,
        "first_name": clean_first_name(first_name), "timezone": timezone,
        "attributes": {**(attributes or {}), **({SIGNUP_SEQUENCE: sequence} if sequence else {}),
                       **({SIGNUP_TOPICS: choice} if choice else {})},
        "sequence": sequence, "topics": choice, "agreed": " ".join(topics[0]) if topics else None,
        "source": consent.source, "ip": consent.ip,
        "user_agent": (consent.user_agent or None) and consent.user_agent[:400],
        "form": consent.form, "wording": consent.wording, "names": names,
        "key": new_link_key(),
    }  # fmt: skip
    sql = _statements(engine.dialect.name)
    if sql.tags is None:  # PostgreSQL: one statement is its own transaction
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return conn.execute(sql.steps[0], params).scalar()
    with engine.begin() as conn:
        *earlier, last = sql.steps
        for step in earlier:
            conn.execute(step, params)
        delivery_id = conn.execute(last, params).scalar()
        if names:  # the input's, never the address's
            conn.execute(sql.tags, [{**params, "name": name} for name in names])
        return delivery_id


def sign_up(
    settings: Settings, address: str, now: datetime, *, consent: ConsentInfo,
    first_name: str | None = None, timezone: str | None = None, tags: list[str] | None = None,
    sequence: str | None = None, attributes: dict[str, str] | None = None,
    topics: list[str] | None = None,
) -> int | None:  # fmt: skip
    """`request_signup` on the settings' database: what the signup form calls. `topics`
    are those ticked of the ones the form offers (None: it offered none)."""
    offered = topics_for(settings.workspace).signup
    choice = None if topics is None else (topics, [t for t in offered if t not in topics])
    return request_signup(
        get_engine(settings), address, now, consent=consent, first_name=first_name,
        timezone=timezone, tags=tags, sequence=sequence, attributes=attributes, topics=choice,
    )  # fmt: skip


def request_counts(settings: Settings) -> DatabaseCounts | None:
    """Where web processes count requests for their limits (signups per client, uses of
    a link) when they share no Redis: the database, which every gunicorn worker shares
    (counted in each worker's memory, 5 a minute let 10 through with 2). None with
    Redis, which counts them itself."""
    return DatabaseCounts(settings) if settings.embedded else None
