"""Send one delivery, exactly as the worker does: claim, re-check, render, send, record.

The claim is a conditional UPDATE committed before SMTP is touched, so a redelivered
queue message, a retry or a second worker finds the row taken and does nothing. The
outcome is written after, in its own transaction, together with the enrolment's
next step.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nurture.compose import Composed, compose_confirmation, compose_step
from nurture.db import session_scope
from nurture.errors import ConfigError, DeliveryError, TemplateError
from nurture.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from nurture.rendering import SubscriberView
from nurture.scheduling import advance
from nurture.sequences import catalog_for
from nurture.settings import Settings
from nurture.subscribers import bounce, is_suppressed, tags_of
from nurture.tokens import Purpose, make_token
from nurture.transports import transport_for

log = logging.getLogger(__name__)

#: Attempts before a temporarily failing delivery is given up as failed.
MAX_ATTEMPTS = 8
#: First retry delay; doubles each attempt up to MAX_BACKOFF.
MIN_BACKOFF = timedelta(minutes=2)
MAX_BACKOFF = timedelta(hours=6)


class Outcome(StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"
    RETRY = "retry"
    FAILED = "failed"
    NOT_MINE = "not-mine"  # already claimed or settled by someone else


def backoff(attempts: int) -> timedelta:
    return min(MIN_BACKOFF * 2 ** max(0, attempts - 1), MAX_BACKOFF)


def _claim(session: Session, delivery_id: int, now: datetime) -> bool:
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
        )
        .values(status=DeliveryStatus.SENDING, claimed_at=now, attempts=Delivery.attempts + 1)
    )
    return result.rowcount == 1


def _why_not(session: Session, delivery: Delivery, sub: Subscriber | None) -> str | None:
    """The reason this delivery must not go out now, if there is one."""
    if sub is None:
        return "subscriber no longer exists"
    if is_suppressed(session, sub.email):
        return "address is suppressed"
    wanted = SubscriberStatus.PENDING if delivery.kind == "confirm" else SubscriberStatus.ACTIVE
    if sub.status != wanted:
        return f"subscriber is {sub.status}"
    if delivery.enrollment_id is not None:
        status = session.scalar(
            select(Enrollment.status).where(Enrollment.id == delivery.enrollment_id)
        )
        if status != EnrollmentStatus.ACTIVE:
            return f"enrolment is {status}"
    return None


def _compose(settings: Settings, session: Session, delivery: Delivery, sub: Subscriber) -> Composed:
    view = SubscriberView(
        email=sub.email, first_name=sub.first_name, timezone=sub.timezone,
        attributes=dict(sub.attributes or {}), tags=tuple(tags_of(session, sub.id)),
    )  # fmt: skip
    if delivery.kind == "confirm":
        token = make_token(settings.secret_key, Purpose.CONFIRM, {"s": sub.id})
        return compose_confirmation(settings, view, sub.id, token)
    seq = catalog_for(settings.sequences_dir).get(delivery.sequence or "")
    step = seq.step(delivery.step_id or "") if seq else None
    if seq is None or step is None:
        raise TemplateError(f"step {delivery.sequence}/{delivery.step_id} no longer exists")
    return compose_step(settings, seq, step, view, sub.id, delivery.id)


def send_delivery(settings: Settings, delivery_id: int) -> Outcome:
    with session_scope(settings) as session:
        if not _claim(session, delivery_id, utcnow()):
            return Outcome.NOT_MINE
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        sub = session.get(Subscriber, delivery.subscriber_id)
        reason = _why_not(session, delivery, sub)
        if reason is None:
            assert sub is not None
            try:
                composed = _compose(settings, session, delivery, sub)
            except TemplateError as e:  # a broken template will not mend itself
                _settle(session, settings, delivery, Outcome.FAILED, str(e))
                return Outcome.FAILED
            except ConfigError as e:  # the operator can fix it; keep the email for later
                _settle(session, settings, delivery, Outcome.RETRY, str(e))
                return Outcome.RETRY
        if reason is not None:
            _settle(session, settings, delivery, Outcome.SKIPPED, reason)
            return Outcome.SKIPPED
        attempt = delivery.attempts
    # The claim is committed: from here on a crash leaves the row `sending`, which
    # `send-due` recovers after STALE_SENDING.
    try:
        transport_for(settings.smtp_url, settings.outbox).send(composed.envelope)
    except DeliveryError as e:
        outcome = Outcome.FAILED if e.permanent or attempt >= MAX_ATTEMPTS else Outcome.RETRY
        error: str | None = str(e)
        bounced = e.permanent
    else:
        outcome, error, bounced = Outcome.SENT, None, False
    with session_scope(settings) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.SENDING:
            return outcome  # forgotten or recovered by another worker meanwhile
        delivery.message_id = composed.envelope.message_id
        delivery.subject = composed.rendered.subject[:300]
        _settle(session, settings, delivery, outcome, error, bounced=bounced)
    if outcome != Outcome.SENT:
        log.warning("delivery %s %s: %s", delivery_id, outcome, error)
    return outcome


def _settle(
    session: Session, settings: Settings, delivery: Delivery, outcome: Outcome,
    error: str | None, *, bounced: bool = False,
) -> None:  # fmt: skip
    """Record what happened and move the enrolment on; `bounced` suppresses the address."""
    now = utcnow()
    delivery.error = error
    enrollment = session.get(Enrollment, delivery.enrollment_id) if delivery.enrollment_id else None
    if outcome == Outcome.SENT:
        delivery.status, delivery.sent_at = DeliveryStatus.SENT, now
        if enrollment is not None:
            advance(
                session,
                enrollment,
                catalog_for(settings.sequences_dir).get(enrollment.sequence),
                now,
            )
    elif outcome == Outcome.RETRY:
        delivery.status = DeliveryStatus.RETRY
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    elif outcome == Outcome.SKIPPED:
        delivery.status = DeliveryStatus.SKIPPED
        if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
            enrollment.status, enrollment.ended_at = EnrollmentStatus.EXITED, now
            enrollment.end_reason = error
    else:
        delivery.status = DeliveryStatus.FAILED
        sub = session.get(Subscriber, delivery.subscriber_id)
        if bounced and sub is not None:
            bounce(session, sub, now, error or "hard bounce")
        if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
            enrollment.status, enrollment.ended_at = EnrollmentStatus.FAILED, now
            enrollment.end_reason = f"step {delivery.step_id} failed: {error}"
