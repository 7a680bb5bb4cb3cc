"""The tables. Times are timezone-aware UTC; statuses are StrEnums stored as strings."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from nurture.store.base import Base, UTCDateTime, utcnow  # noqa: F401 - re-exported
from nurture.store.enums import (  # noqa: F401 - re-exported: the tables' vocabulary
    IN_FLIGHT,
    NOT_GOING,
    SUNSET_OPEN,
    TO_SEND,
    UNSETTLED,
    BroadcastState,
    DeliveryKind,
    DeliveryStatus,
    EnrollmentStatus,
    HandoffStatus,
    SubscriberStatus,
    SunsetOutcome,
)
from nurture.store.sunsets import LastRun, Sunset  # noqa: F401 - re-exported: every table here

#: Random bytes in a link key: 16 URL-safe characters, no padding.
LINK_KEY_BYTES = 12


def new_link_key() -> str:
    """A fresh random key for a subscriber's links (see Subscriber.link_key)."""
    return secrets.token_urlsafe(LINK_KEY_BYTES)


def new_link_keys(n: int) -> list[str]:
    """`n` keys as `new_link_key` draws them, from one read of the system's randomness (a
    bulk import): 12 bytes encode to exactly 16 characters, so the slices are whole keys."""
    text = base64.urlsafe_b64encode(secrets.token_bytes(LINK_KEY_BYTES * n)).decode()
    return [text[i : i + 16] for i in range(0, len(text), 16)]


class Subscriber(Base):
    __tablename__ = "subscribers"
    # Ids are never handed out twice, not even the highest after a `forget`: an old link
    # naming a forgotten person's id must never reach whoever comes next.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.PENDING)
    source: Mapped[str] = mapped_column(String(32), default="cli")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    score: Mapped[int] = mapped_column(Integer, default=0)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Signed into every confirm and unsubscribe link and checked on use; a new one is
    #: drawn when the person subscribes again, so links from before stop working.
    link_key: Mapped[str] = mapped_column(String(32), default=new_link_key)
    #: Paused on the preference centre: nothing is sent before this time.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("subscriber_id", "name", name="uq_tags_subscriber_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64), index=True)


class Consent(Base):
    """Append-only ledger of what a subscriber agreed to, when and where."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(16))  # requested | confirmed | withdrawn
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(32))  # form | cli | import | api
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    form: Mapped[str | None] = mapped_column(String(200))
    wording: Mapped[str | None] = mapped_column(Text)
    #: The topics agreed to or left, space-separated; None: the whole subscription.
    topics: Mapped[str | None] = mapped_column(Text)


class LeftTopic(Base):
    """A topic a subscriber left (nurture.content.topics): none of its emails go to them."""

    __tablename__ = "left_topics"
    __table_args__ = (UniqueConstraint("subscriber_id", "topic", name="uq_left_topics_topic"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        # One row per round: a sequence with `reentry: true` can be gone through again.
        UniqueConstraint(
            "subscriber_id", "sequence", "round", name="uq_enrollments_subscriber_sequence_round"
        ),  # fmt: skip
        Index("ix_enrollments_due", "status", "next_due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    sequence: Mapped[str] = mapped_column(String(100))
    #: 1 for the first time through the sequence, 2 for the second (`reentry: true`)…
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.ACTIVE)
    #: The step to send next, by its stable id; None once the sequence is finished.
    next_step_id: Mapped[str | None] = mapped_column(String(100))
    #: When that step is due; None while its delivery is in flight.
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(200))
    #: Why the next step waits past its due time (send window, daily cap, gate,
    #: newsletter day), as the planner last decided; None when nothing holds it.
    waiting_for: Mapped[str | None] = mapped_column(String(200))


class Delivery(Base):
    """One email to one subscriber; the table is also the outbox the queue works from."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_deliveries_enrollment_step"),
        Index("ix_deliveries_pending", "status", "next_attempt_at"),
        # Open and click links name a delivery: its id must never come back for another.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16), default=DeliveryKind.SEQUENCE)
    sequence: Mapped[str | None] = mapped_column(String(100))
    step_id: Mapped[str | None] = mapped_column(String(100))
    #: The broadcast this email is part of (kind "broadcast").
    broadcast_id: Mapped[int | None] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE")
    )
    #: A `broadcast send --test-to` copy: not counted, and free of the one-per-subscriber rule.
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Last time `send-due` took this delivery back from a worker that lost it mid-send.
    recovered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the current claim handed it to SMTP (committed before the transaction
    #: starts); None while claimed and not yet attempted.
    handed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Taken back after it was handed to SMTP: the server may have accepted it, so the
    #: email sent again may be a duplicate.
    maybe_twice: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Our Message-ID header: a bounce that quotes it is matched to this email.
    message_id: Mapped[str | None] = mapped_column(String(200), index=True)
    subject: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    #: The experiment variant this email is (or `holdout`: skipped, held out).
    variant: Mapped[str | None] = mapped_column(String(64))


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_subscriber_kind", "subscriber_id", "kind"),
        # "opened or clicked since": one index range per person (segments, sunset)
        Index("ix_events_engagement", "subscriber_id", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(64))  # open | click | unsubscribe | <custom>
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    bot: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Suppression(Base):
    """Addresses never to mail again, kept as a SHA-256 hash so a forgotten subscriber
    stays suppressed without their address being stored."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RateCount(Base):
    """A fixed-window request counter shared by every web process without Redis."""

    __tablename__ = "rate_counts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    resets_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Handoff(Base):
    """The sales handoff of one subscriber who became ready; also its outbox row."""

    __tablename__ = "handoffs"
    __table_args__ = (Index("ix_handoffs_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), unique=True
    )
    sequence: Mapped[str] = mapped_column(String(100))
    score: Mapped[int] = mapped_column(Integer, default=0)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=HandoffStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class Broadcast(Base):
    """One newsletter issue: its content as sent (a snapshot of the source), its audience
    and where its fan-out stands, so a killed process resumes where it stopped."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_due", "state", "send_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    source: Mapped[str] = mapped_column(String(300))  # file or template name, as given
    subject: Mapped[str] = mapped_column(String(300))
    preheader: Mapped[str | None] = mapped_column(String(300))
    body_html: Mapped[str] = mapped_column(Text)  # a Jinja HTML fragment
    body_text: Mapped[str | None] = mapped_column(Text)  # its Jinja text twin, if any
    segment: Mapped[str | None] = mapped_column(Text)  # None: every active subscriber
    topic: Mapped[str | None] = mapped_column(String(100))  # None: topics.BROADCAST_TOPIC
    state: Mapped[str] = mapped_column(String(16), default=BroadcastState.DRAFT)
    #: When the fan-out may start; with `local_at`, the earliest zone's turn.
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: `--local-time`: the wall-clock time (YYYY-MM-DDTHH:MM) in each subscriber's zone.
    local_at: Mapped[str | None] = mapped_column(String(16))
    archive: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The highest subscriber id the fan-out has written deliveries for.
    checkpoint: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fanned_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Its variants and test share, as scheduled (broadcast/experiment.py).
    experiment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: With a test share: when the winner is picked and sent to the rest.
    pick_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ExperimentEnd(Base):
    """An experiment ended: from `at` on, everyone gets the `kept` variant."""

    __tablename__ = "experiment_ends"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kept: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: How: `experiment end --keep B`, or picked by clicks, with the numbers.
    how: Mapped[str] = mapped_column(Text)


# One email per broadcast and subscriber; test copies are left out of the rule.
Index(
    "uq_deliveries_broadcast_subscriber",
    Delivery.broadcast_id,
    Delivery.subscriber_id,
    unique=True,
    sqlite_where=~Delivery.is_test,
    postgresql_where=~Delivery.is_test,
)

# `send-due` asks every batch whether a broadcast went out lately (broadcasts_near):
# only broadcast deliveries are indexed, so sequence deliveries cost it nothing.
Index(
    "ix_deliveries_broadcast_recent",
    Delivery.created_at,
    sqlite_where=Delivery.broadcast_id.is_not(None),
    postgresql_where=Delivery.broadcast_id.is_not(None),
)


class SequenceVersion(Base):
    """The version of a sequence (its file and the templates its steps use) that
    `send-due`, the worker or `serve` last ran with: what `nurture plan` compares the
    workspace against. One row per sequence, replaced when its content hash changes."""

    __tablename__ = "sequence_versions"

    sequence: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: sha256 over the files below, in path order.
    content_hash: Mapped[str] = mapped_column(String(64))
    #: {path relative to the workspace: text}: the sequence file and its templates.
    files: Mapped[dict[str, str]] = mapped_column(JSON)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BounceMessage(Base):
    """A bounce or complaint already handled, by a key of its own (the message's
    Message-ID, or a hash of its bytes, or a provider's event id): a second host
    running `bounces fetch`, or a provider sending a webhook again, finds it here and
    changes nothing."""

    __tablename__ = "bounce_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(200))


class SuppressionRemoval(Base):
    """Who took an address off the suppression list, when and why: a removal may let
    mail go to someone who complained, so it is never silent."""

    __tablename__ = "suppression_removals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(200))  # why it had been suppressed
    why: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
