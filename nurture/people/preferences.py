"""Readers' choices, kept as facts the send path reads: the topics they left, a pause of
everything, and why they said so (nurture.content.topics declares the topics).

A subscriber is in every topic until they leave it. Leaving ends their enrolments in
the topic's sequences and cancels the topic's emails already queued, as unsubscribing
does; an email of a topic they left is never sent (the planner ends such an enrolment
at its next step, the worker skips such an email). A pause holds everything until it
ends: sequence steps wait, then go on where they were; broadcasts sent meanwhile are
missed. Each change is a record in the consent ledger naming the topics left or agreed
to, and the reader's reason, when they give one, is kept with the event that says
what they did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from nurture.content.fields import clean_text
from nurture.content.sequences import Catalog
from nurture.content.topics import BROADCAST_TOPIC, topic_of
from nurture.people.subscribers import ConsentInfo, record_consent, stop_sending
from nurture.store.sql import among, insert_ignoring_conflicts
from nurture.store.tables import (
    TO_SEND,
    Broadcast,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    LeftTopic,
    Subscriber,
)

#: The pauses the preference centre offers, in days.
PAUSE_DAYS = (30, 90)
#: Why a reader leaves, as the preference centre offers it (code → what they read).
REASONS = {
    "too-many": "Too many emails",
    "not-relevant": "Not relevant to me",
    "never-signed-up": "I never signed up",
    "other": "Another reason",
}
#: Longest free-text reason kept, in characters.
REASON_TEXT_MAX = 500
#: The event kind that records a change of topics or a pause, with its reason.
PREFERENCES_EVENT = "preferences"
#: Attribute that remembers a signup's topic choice until it is confirmed: the topics
#: agreed to, and those the form offered but were left unticked, written `-name`.
SIGNUP_TOPICS = "signup_topics"
#: How an enrolment held by a pause notes it (`waiting_for`).
PAUSED = "paused by the reader"


@dataclass(frozen=True)
class Reason:
    """Why a reader changed their subscription: a code of REASONS and/or their words."""

    code: str | None = None
    text: str | None = None

    @classmethod
    def given(cls, code: str | None, text: str | None) -> Reason:
        """The reason as a form sent it: an unknown code is dropped, the text cleaned."""
        kept = code if code in REASONS else None
        return cls(kept, clean_text(text or "", REASON_TEXT_MAX) or None)

    def data(self) -> dict[str, str]:
        return {k: v for k, v in (("reason", self.code), ("reason_text", self.text)) if v}


def not_left(topic: str) -> ColumnElement[bool]:
    """SQL: the subscriber has not left `topic`."""
    return ~exists(select(LeftTopic.id).where(LeftTopic.subscriber_id == Subscriber.id,
                                              LeftTopic.topic == topic))  # fmt: skip


def not_paused(now: datetime) -> ColumnElement[bool]:
    """SQL: the subscriber has no pause running at `now`."""
    return or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now)


def left_topics(session: Session, subscriber_id: int) -> set[str]:
    return set(session.scalars(select(LeftTopic.topic)
                               .where(LeftTopic.subscriber_id == subscriber_id)))  # fmt: skip


@dataclass
class Holds:
    """What the readers of a batch chose, read in two queries: the topics each left and
    the pauses running. The planner and the worker ask it before each email."""

    left: dict[int, set[str]] = field(default_factory=dict)
    paused: dict[int, datetime] = field(default_factory=dict)

    @classmethod
    def load(
        cls, session: Session, ids: Iterable[int], now: datetime,
        paused: dict[int, datetime | None] | None = None,
    ) -> Holds:  # fmt: skip
        """The holds of these subscribers; `paused` (id → paused_until) when the caller
        read the pauses with their rows already, which spares a query."""
        ids = sorted(set(ids))
        holds = cls()
        if not ids:
            return holds
        conn = session.connection()
        for sid, topic in conn.execute(select(LeftTopic.subscriber_id, LeftTopic.topic)
                                       .where(among(session, LeftTopic.subscriber_id, ids))):  # fmt: skip
            holds.left.setdefault(sid, set()).add(topic)
        if paused is None:
            rows = conn.execute(select(Subscriber.id, Subscriber.paused_until)
                                .where(among(session, Subscriber.id, ids),
                                       Subscriber.paused_until > now))  # fmt: skip
            paused = {sid: until for sid, until in rows}
        holds.paused = {sid: t for sid, t in paused.items() if t is not None and t > now}
        return holds

    def left_reason(self, subscriber_id: int, topic: str) -> str | None:
        """Why an email of `topic` must not go to this subscriber, if they left it."""
        return f"left the topic '{topic}'" if topic in self.left.get(subscriber_id, ()) else None

    def paused_until(self, subscriber_id: int) -> datetime | None:
        return self.paused.get(subscriber_id)


def paused_reason(until: datetime) -> str:
    return f"{PAUSED} until {until:%Y-%m-%d %H:%M} UTC"


def leave_topics(
    session: Session, sub: Subscriber, topics: Iterable[str], catalog: Catalog, now: datetime,
    consent: ConsentInfo,
) -> list[str]:  # fmt: skip
    """Leave `topics` now: their sequences end, their queued emails are cancelled, and
    the ledger records the withdrawal. Returns the topics newly left."""
    stmt = insert_ignoring_conflicts(session, LeftTopic, ["subscriber_id", "topic"])
    new = [t for t in dict.fromkeys(topics)
           if session.execute(stmt.values(subscriber_id=sub.id, topic=t, at=now)
                              .returning(LeftTopic.id)).first() is not None]  # fmt: skip
    if not new:
        return []
    for seq in catalog.sequences.values():
        if topic_of(seq) in new:
            stop_sending(session, sub, now, f"left the topic '{topic_of(seq)}'", seq.name)
    issues = select(Broadcast.id).where(func.coalesce(Broadcast.topic, BROADCAST_TOPIC).in_(new))
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == sub.id, Delivery.broadcast_id.in_(issues),
               Delivery.status.in_([DeliveryStatus.SCHEDULED, *TO_SEND]))
        .values(status=DeliveryStatus.CANCELLED, error="left the topic")
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    record_consent(session, sub.id, "withdrawn", now, replace(consent, topics=tuple(new)))
    return new


def join_topics(
    session: Session, sub: Subscriber, topics: Iterable[str], now: datetime, consent: ConsentInfo
) -> list[str]:
    """Come back to topics left before; the ledger records the agreement. Returns the
    topics rejoined. What ended when they left stays ended: their next emails are the
    topic's next broadcasts and the sequences that start from now on."""
    back = list(session.scalars(
        delete(LeftTopic)
        .where(LeftTopic.subscriber_id == sub.id, LeftTopic.topic.in_(list(topics)))
        .returning(LeftTopic.topic)
    ))  # fmt: skip
    if back:
        record_consent(session, sub.id, "agreed", now, replace(consent, topics=tuple(sorted(back))))
    return sorted(back)


def pause(sub: Subscriber, until: datetime) -> None:
    """Hold every email until `until` (the planner and the worker read it)."""
    sub.paused_until = until


def resume(session: Session, sub: Subscriber, now: datetime) -> None:
    """End a pause now: the steps it held, and the emails a worker handed back for it,
    are due again at once (the next `send-due` takes them)."""
    sub.paused_until = None
    session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id == sub.id, Enrollment.status == EnrollmentStatus.ACTIVE,
               Enrollment.waiting_for.startswith(PAUSED))
        .values(next_due_at=now, waiting_for=None)
    )  # fmt: skip
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == sub.id, Delivery.status == DeliveryStatus.RETRY,
               Delivery.next_attempt_at > now, Delivery.error.contains(PAUSED))
        .values(next_attempt_at=now)
    )  # fmt: skip


def remembered_choice(attributes: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(agreed, left) from a signup's remembered choice (SIGNUP_TOPICS)."""
    words = str((attributes or {}).get(SIGNUP_TOPICS) or "").split()
    return [w for w in words if not w.startswith("-")], [w[1:] for w in words if w[:1] == "-"]


def choice_text(agreed: Iterable[str], left: Iterable[str]) -> str:
    """The SIGNUP_TOPICS value of a choice: `newsletter -tips`."""
    return " ".join([*agreed, *(f"-{t}" for t in left)])


def apply_signup_choice(session: Session, sub: Subscriber, now: datetime) -> list[str]:
    """At confirmation, make a signup's topic choice the subscriber's: the topics left
    unticked are left, those ticked are (again) theirs. Returns the topics agreed to."""
    agreed, left = remembered_choice(sub.attributes)
    if not agreed and not left:
        return []
    session.execute(delete(LeftTopic).where(LeftTopic.subscriber_id == sub.id,
                                            LeftTopic.topic.in_(agreed)))  # fmt: skip
    stmt = insert_ignoring_conflicts(session, LeftTopic, ["subscriber_id", "topic"])
    for topic in left:
        session.execute(stmt.values(subscriber_id=sub.id, topic=topic, at=now))
    sub.attributes = {k: v for k, v in (sub.attributes or {}).items() if k != SIGNUP_TOPICS}
    return agreed
