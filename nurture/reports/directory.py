"""Read-only views of subscribers for the command line: a page of the list, one
person's whole journey, every row of an export. Each opens its own session and hands
back plain values, so a caller prints without touching the database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture import clock
from nurture.content.fields import fields_for
from nurture.content.sequences import catalog_for
from nurture.people.engagement import live_score
from nurture.people.preferences import PREFERENCES_EVENT, REASONS, left_topics
from nurture.people.subscribers import get, tags_of
from nurture.reports.stats import SUNSET_WORDS
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.sql import among
from nurture.store.tables import (
    Consent,
    Delivery,
    Enrollment,
    Event,
    Subscriber,
    SubscriberStatus,
    Sunset,
    SunsetOutcome,
    Tag,
)

#: Subscribers (and their tags) read per round trip while exporting.
EXPORT_CHUNK = 1000


@dataclass(frozen=True)
class Listed:
    email: str
    status: str
    first_name: str | None
    created_at: datetime


@dataclass(frozen=True)
class Page:
    """The subscribers shown, and how many match in all."""

    rows: list[Listed]
    total: int


def list_subscribers(settings: Settings, status: str | None, limit: int) -> Page:
    """Newest first, optionally of one status."""
    query = select(Subscriber).order_by(Subscriber.created_at.desc(), Subscriber.id.desc())
    if status:
        query = query.where(Subscriber.status == status)
    with session_scope(settings) as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = [Listed(s.email, s.status, s.first_name, s.created_at)
                for s in session.scalars(query.limit(limit))]  # fmt: skip
    return Page(rows, total)


@dataclass(frozen=True)
class ConsentLine:
    at: datetime
    action: str
    source: str
    where: str  # ip, form and user agent, those known, comma-separated
    wording: str | None
    topics: str | None = None  # the topics agreed to or left; None: the whole subscription


@dataclass(frozen=True)
class EnrollmentLine:
    sequence: str
    round: int
    status: str
    ended_at: datetime | None
    end_reason: str | None
    next_step_id: str | None
    next_due_at: datetime | None
    waiting_for: str | None

    def whereabouts(self) -> str:
        """Where an enrolment stands, and why its next step waits when something holds it."""
        if self.ended_at:
            return f"ended {self.ended_at:%Y-%m-%d %H:%M}: {self.end_reason}"
        if self.next_due_at is None:
            return f"next: {self.next_step_id} (being sent)"
        why = f" ({self.waiting_for})" if self.waiting_for else ""
        return f"next: {self.next_step_id} at {self.next_due_at:%Y-%m-%d %H:%M}{why}"


@dataclass(frozen=True)
class EmailLine:
    at: datetime  # sent, else written
    status: str
    what: str  # sequence/step, or the kind of email
    subject: str | None
    error: str | None


@dataclass(frozen=True)
class Card:
    """One subscriber's whole journey: who, consent, enrolments and every email."""

    email: str
    status: str
    first_name: str | None
    timezone: str | None
    tags: list[str]
    fields: dict[str, str]  # declared fields only
    score: int
    ready_at: datetime | None
    created_at: datetime
    source: str
    consents: list[ConsentLine]
    enrollments: list[EnrollmentLine]
    emails: list[EmailLine]
    #: The reader's choices (nurture.people.preferences): topics left, a pause running,
    #: and the reasons they gave, as (when, what they did, the reason's code, their words).
    topics_left: list[str] = field(default_factory=list)
    paused_until: datetime | None = None
    reasons: list[tuple[datetime, str, str, str]] = field(default_factory=list)
    #: Each round of the sunset policy: "found inactive 2026-07-01, won back 2026-07-04".
    sunsets: list[str] = field(default_factory=list)


def show_subscriber(settings: Settings, address: str) -> Card:
    """Everything `subscribers show` prints; SubscriberError for an unknown address."""
    declared = fields_for(settings.workspace).types
    with session_scope(settings) as session:
        sub = get(session, address)
        score = live_score(session, sub.id, catalog_for(settings.sequences_dir))
        consents = session.scalars(select(Consent).where(Consent.subscriber_id == sub.id)
                                   .order_by(Consent.at, Consent.id))  # fmt: skip
        enrollments = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == sub.id)
                                      .order_by(Enrollment.enrolled_at, Enrollment.id))  # fmt: skip
        emails = session.scalars(select(Delivery).where(Delivery.subscriber_id == sub.id)
                                 .order_by(Delivery.id))  # fmt: skip
        rounds = session.scalars(select(Sunset).where(Sunset.subscriber_id == sub.id)
                                 .order_by(Sunset.id))  # fmt: skip
        return Card(
            email=sub.email, status=sub.status, first_name=sub.first_name,
            timezone=sub.timezone, tags=tags_of(session, sub.id),
            fields={k: v for k, v in (sub.attributes or {}).items() if k in declared},
            score=score, ready_at=sub.ready_at, created_at=sub.created_at, source=sub.source,
            consents=[ConsentLine(c.at, c.action, c.source,
                                  ", ".join(x for x in (c.ip, c.form, c.user_agent) if x),
                                  c.wording, c.topics) for c in consents],
            enrollments=[EnrollmentLine(e.sequence, e.round, e.status, e.ended_at, e.end_reason,
                                        e.next_step_id, e.next_due_at, e.waiting_for)
                         for e in enrollments],
            emails=[EmailLine(d.sent_at or d.created_at, d.status,
                              (f"{d.sequence}/{d.step_id}" if d.kind == "sequence" else d.kind)
                              + (f" [variant {d.variant}]" if d.variant else ""),
                              d.subject, d.error) for d in emails],
            topics_left=sorted(left_topics(session, sub.id)), paused_until=_running(sub),
            reasons=_reasons(session, sub.id),
            sunsets=[f"found inactive {r.started_at:%Y-%m-%d %H:%M}, {SUNSET_WORDS[SunsetOutcome(r.outcome)]}"
                     + (f" {r.decided_at:%Y-%m-%d %H:%M}" if r.decided_at else "")
                     for r in rounds],
        )  # fmt: skip


def _running(sub: Subscriber) -> datetime | None:
    """The pause still holding emails: none once the reader left everything or bounced."""
    until = sub.paused_until
    receiving = sub.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)
    return until if receiving and until is not None and until > clock.now() else None


def _reasons(session: Session, subscriber_id: int) -> list[tuple[datetime, str, str, str]]:
    """The reasons a reader gave for leaving or changing their topics, oldest first."""
    events = session.scalars(select(Event).where(
        Event.subscriber_id == subscriber_id, Event.kind.in_(["unsubscribe", PREFERENCES_EVENT])
    ).order_by(Event.at, Event.id))  # fmt: skip
    return [(e.at, e.kind, REASONS.get(e.data.get("reason", ""), "-"), e.data.get("reason_text", ""))
            for e in events if e.data and (e.data.get("reason") or e.data.get("reason_text"))]  # fmt: skip


def export_columns(settings: Settings) -> list[str]:
    """The CSV header of an export: the built-in columns, then each declared field."""
    return ["email", "first_name", "timezone", "tags", "status", "created_at", "confirmed_at",
            *sorted(fields_for(settings.workspace).types)]  # fmt: skip


def export_rows(settings: Settings) -> Iterator[list[str]]:
    """Every subscriber as a CSV row in `export_columns` order, oldest first, read a
    chunk at a time with the chunk's tags in one query (a list of a million neither
    sits in memory nor costs a query per person)."""
    names = sorted(fields_for(settings.workspace).types)
    after = 0
    with session_scope(settings) as session:
        while True:
            chunk = session.scalars(select(Subscriber).where(Subscriber.id > after)
                                    .order_by(Subscriber.id).limit(EXPORT_CHUNK)).all()  # fmt: skip
            if not chunk:
                return
            tags: dict[int, list[str]] = {}
            for sid, name in session.execute(
                select(Tag.subscriber_id, Tag.name)
                .where(among(session, Tag.subscriber_id, [s.id for s in chunk]))
                .order_by(Tag.name)
            ):  # fmt: skip
                tags.setdefault(sid, []).append(name)
            for s in chunk:
                attrs = s.attributes or {}
                yield [s.email, s.first_name or "", s.timezone or "",
                       " ".join(tags.get(s.id, [])), s.status, s.created_at.isoformat(),
                       s.confirmed_at.isoformat() if s.confirmed_at else "",
                       *(attrs.get(n, "") for n in names)]  # fmt: skip
            after = chunk[-1].id
            session.expunge_all()  # the chunk is written: let it go
