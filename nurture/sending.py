"""Send deliveries exactly as the worker does: claim, re-check, render, send, record.

A delivery row is a small state machine (docs/distributed.md):

    queued --claim--> sending --> sent | failed | skipped
       ^                 |
       +---- retry <-----+   4xx or server unreachable: due again at next_attempt_at

The claim is a conditional UPDATE (queued|retry -> sending, attempts + 1) committed before
SMTP is touched, so a redelivered queue message, a retry or a second worker finds the row
taken and does nothing. `attempts` is also the claim's fencing token: the outcome is
written only where the row is still `sending` *with this claim's attempt number*, so a
worker that was presumed dead and overtaken by `send-due`'s recovery cannot overwrite the
newer claim's record or move the enrolment on twice. What `send-due` recovers, and when,
is in scheduling.requeue_stale.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Table, case, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.compose import Composed, compose_confirmation, compose_step
from nurture.db import get_engine, session_scope
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
from nurture.scheduling import TAKEN_BACK, advance
from nurture.sequences import catalog_for
from nurture.settings import DEFAULT_RETRY_BACKOFF, Settings
from nurture.subscribers import bounce, is_suppressed, tags_of
from nurture.tokens import Purpose, make_token
from nurture.transports import transport_for

if TYPE_CHECKING:
    from nurture.ratelimit import Gate

log = logging.getLogger(__name__)

_DELIVERIES = cast(Table, Delivery.__table__)
#: Attempts before a temporarily failing delivery is given up as failed.
MAX_ATTEMPTS = 8
#: Longest wait between two attempts; the first is settings.retry_backoff, then doubles.
MAX_BACKOFF = timedelta(hours=6)


class Outcome(StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"
    RETRY = "retry"
    FAILED = "failed"
    NOT_MINE = "not-mine"  # already claimed or settled by someone else


@dataclass(frozen=True)
class Attempt:
    """What one call did. `retry_at` is set for RETRY; `server_down` when the server
    itself failed (unreachable, closing, refusing our sender), so the next send would too."""

    outcome: Outcome
    error: str | None = None
    retry_at: datetime | None = None
    server_down: bool = False


@dataclass
class Batch:
    counts: Counter[str] = field(default_factory=Counter)
    #: Latest next attempt among the batch's retries: when its message should come back.
    retry_at: datetime | None = None
    #: Not attempted (the gate said stop): to hand back to the queue.
    rest: list[int] = field(default_factory=list)
    #: The SMTP server failed as a whole; the batch stopped and postponed the rest.
    server_down: bool = False


def backoff(attempts: int, first: timedelta = DEFAULT_RETRY_BACKOFF) -> timedelta:
    return min(first * 2 ** max(0, attempts - 1), MAX_BACKOFF)


def send_delivery(settings: Settings, delivery_id: int) -> Outcome:
    return attempt(settings, delivery_id).outcome


def send_batch(settings: Settings, delivery_ids: list[int], gate: Gate | None = None) -> Batch:
    """Send deliveries one by one, the way a worker thread does with one queue message.

    `gate` (ratelimit.Throttle) is asked before each claim and may wait for the rate and
    an SMTP slot; it answers False to stop, and the rest is returned to hand back. When
    the server fails as a whole the rest is postponed with the failed one rather than
    tried one by one against a dead server: send-due must never hang for minutes.
    """
    # One connection for the whole batch: a thread never needs two, and no checkout (and
    # pre-ping) per transaction.
    with get_engine(settings).connect() as conn, Session(bind=conn) as session:
        return _send_all(settings, delivery_ids, gate, session)


def _send_all(
    settings: Settings, delivery_ids: list[int], gate: Gate | None, session: Session
) -> Batch:
    batch = Batch()
    # Paced by a rate: spend it on deliveries still to send, not on a repeated message's.
    paced = gate is not None and gate.paced
    open_ids = _claimable(settings, delivery_ids, session) if paced else None
    for i, delivery_id in enumerate(delivery_ids):
        if open_ids is not None and delivery_id not in open_ids:
            batch.counts[Outcome.NOT_MINE] += 1
            continue
        if gate is not None and not gate():
            batch.rest = delivery_ids[i:]
            break
        result = attempt(settings, delivery_id, session)
        batch.counts[result.outcome] += 1
        if result.retry_at is not None:
            batch.retry_at = max(batch.retry_at or result.retry_at, result.retry_at)
        if result.server_down and result.retry_at is not None:
            rest = delivery_ids[i + 1 :]
            postponed = postpone(settings, rest, result.retry_at, result.error, session)
            batch.counts[Outcome.RETRY] += postponed
            batch.server_down = True
            break
    return batch


def attempt(settings: Settings, delivery_id: int, held: Session | None = None) -> Attempt:
    """Claim, re-check, compose, send and record one delivery. `held`: a session bound to
    a connection the caller keeps for a whole batch, saving a checkout per transaction."""
    with _transaction(settings, held) as session:
        delivery = _claim(session, delivery_id, utcnow())
        if delivery is None:
            return Attempt(Outcome.NOT_MINE)
        token = delivery.attempts
        sub, reason = _why_not(session, delivery)
        if reason is not None:
            return _record(session, settings, delivery_id, token, Outcome.SKIPPED, reason)
        assert sub is not None
        try:
            composed = _compose(settings, session, delivery, sub)
        except TemplateError as e:  # a broken template will not mend itself
            return _record(session, settings, delivery_id, token, Outcome.FAILED, str(e))
        except ConfigError as e:  # the operator can fix it; keep the email for later
            return _record(session, settings, delivery_id, token, Outcome.RETRY, str(e))
        except SQLAlchemyError:
            raise
        except Exception as e:  # a bug: count the attempt, so it cannot loop forever
            log.exception("delivery %s could not be composed", delivery_id)
            verdict, why = _temporary(token, f"internal error: {e!r}")
            return _record(session, settings, delivery_id, token, verdict, why)
    # The claim is committed: from here on a crash leaves the row `sending`, which
    # `send-due` takes back after settings.resend_after and sends again.
    error: str | None
    try:
        transport_for(settings.smtp_url, settings.outbox).send(composed.envelope)
    except DeliveryError as e:
        # Only a recipient refused for good is a bounce; a refused message fails alone;
        # anything temporary, or the server as a whole, is tried again later.
        scope = getattr(e, "scope", "address")
        if e.permanent and scope != "server":
            outcome, error = Outcome.FAILED, str(e)
        else:
            outcome, error = _temporary(token, str(e))
        bounced, server_down = e.permanent and scope == "address", scope == "server"
    else:
        outcome, error, bounced, server_down = Outcome.SENT, None, False, False
    with _transaction(settings, held) as session:
        result = _record(session, settings, delivery_id, token, outcome, error,
                         bounced=bounced, composed=composed, server_down=server_down)  # fmt: skip
    if outcome != Outcome.SENT:
        log.warning("delivery %s %s: %s", delivery_id, result.outcome, error)
    return result


def _temporary(token: int, error: str) -> tuple[Outcome, str]:
    """A temporary failure: try again later, unless this was the last allowed attempt."""
    if token >= MAX_ATTEMPTS:
        return Outcome.FAILED, f"gave up after {token} attempts: {error}"
    return Outcome.RETRY, error


@contextmanager
def _transaction(settings: Settings, session: Session | None) -> Iterator[Session]:
    if session is None:
        with session_scope(settings) as fresh:
            yield fresh
    else:  # expire_on_commit (the default) keeps what it read from going stale
        with session.begin():
            yield session


def postpone(
    settings: Settings, delivery_ids: list[int], until: datetime, why: str | None,
    held: Session | None = None,
) -> int:  # fmt: skip
    """Move deliveries not yet attempted to `until`, without counting an attempt."""
    if not delivery_ids:
        return 0
    with _transaction(settings, held) as session:
        result = session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(delivery_ids),
                Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
            )
            .values(
                status=DeliveryStatus.RETRY, next_attempt_at=until, error=f"not attempted: {why}"
            )  # fmt: skip
        )
    return int(cast(CursorResult[Any], result).rowcount)


def _claimable(settings: Settings, delivery_ids: list[int], held: Session) -> set[int]:
    """Which of these deliveries are still to send (a later claim has the last word)."""
    with _transaction(settings, held) as session:
        return set(
            session.scalars(
                select(Delivery.id).where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                )
            )
        )


def _claim(session: Session, delivery_id: int, now: datetime) -> Delivery | None:
    """Take the delivery if it is still to send: the row, or None if someone else has it.

    Plain SQL on the table (not the ORM's UPDATE): this runs once per email, and the row
    comes back as a detached Delivery that nothing will flush."""
    t = _DELIVERIES
    row = session.execute(
        update(t)
        .where(t.c.id == delivery_id, t.c.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]))
        .values(status=DeliveryStatus.SENDING, claimed_at=now, attempts=t.c.attempts + 1)
        .returning(*t.c)
    ).one_or_none()
    return None if row is None else Delivery(**row._asdict())


def _why_not(session: Session, delivery: Delivery) -> tuple[Subscriber | None, str | None]:
    """The subscriber, and the reason this delivery must not go out now, if there is one."""
    found = session.execute(
        select(Subscriber, Enrollment.status)
        .outerjoin(Enrollment, Enrollment.id == delivery.enrollment_id)
        .where(Subscriber.id == delivery.subscriber_id)
    ).one_or_none()
    if found is None:
        return None, "subscriber no longer exists"
    sub, enrollment_status = found
    if is_suppressed(session, sub.email):
        return sub, "address is suppressed"
    wanted = SubscriberStatus.PENDING if delivery.kind == "confirm" else SubscriberStatus.ACTIVE
    if sub.status != wanted:
        return sub, f"subscriber is {sub.status}"
    if delivery.enrollment_id is not None and enrollment_status != EnrollmentStatus.ACTIVE:
        return sub, f"enrolment is {enrollment_status}"
    return sub, None


def _compose(settings: Settings, session: Session, delivery: Delivery, sub: Subscriber) -> Composed:
    view = SubscriberView(
        email=sub.email, first_name=sub.first_name, timezone=sub.timezone,
        attributes=dict(sub.attributes or {}), tags=tuple(tags_of(session, sub.id)),
    )  # fmt: skip
    if delivery.kind == "confirm":
        token = make_token(settings.secret_key, Purpose.CONFIRM, {"s": sub.id})
        return compose_confirmation(settings, view, sub.id, token)
    if delivery.kind == "broadcast":
        from nurture.broadcast.compose import compose_broadcast

        return compose_broadcast(settings, session, delivery, view)
    seq = catalog_for(settings.sequences_dir).get(delivery.sequence or "")
    step = seq.step(delivery.step_id or "") if seq else None
    if seq is None or step is None:
        raise TemplateError(f"step {delivery.sequence}/{delivery.step_id} no longer exists")
    return compose_step(settings, seq, step, view, sub.id, delivery.id)


def _record(
    session: Session, settings: Settings, delivery_id: int, token: int, outcome: Outcome,
    error: str | None, *, bounced: bool = False, composed: Composed | None = None,
    server_down: bool = False,
) -> Attempt:  # fmt: skip
    """Write the outcome of claim `token`, then its consequences, if the claim still holds."""
    now = utcnow()
    values: dict[str, Any] = {"error": error}
    if composed is not None:
        values["message_id"] = composed.envelope.message_id
        values["subject"] = composed.rendered.subject[:300]
    retry_at = None
    if outcome == Outcome.SENT:  # keeping the note that it may have gone out twice
        note = case((_DELIVERIES.c.recovered_at.is_not(None), TAKEN_BACK), else_=None)
        values.update(status=DeliveryStatus.SENT, sent_at=now, error=note)
    elif outcome == Outcome.RETRY:
        retry_at = now + backoff(token, settings.retry_backoff)
        values.update(status=DeliveryStatus.RETRY, next_attempt_at=retry_at)
    elif outcome == Outcome.SKIPPED:
        values.update(status=DeliveryStatus.SKIPPED)
    else:
        values.update(status=DeliveryStatus.FAILED)
    t = _DELIVERIES
    held = session.execute(
        update(t)
        .where(t.c.id == delivery_id, t.c.status == DeliveryStatus.SENDING, t.c.attempts == token)
        .values(**values)
        .returning(t.c.subscriber_id, t.c.enrollment_id, t.c.step_id)
    ).one_or_none()
    if held is None:
        # Taken back by send-due while this worker looked dead, and claimed again (or
        # forgotten). The newer claim owns the row now; its outcome will be recorded.
        log.warning("delivery %s: %s not recorded, the delivery was claimed again",
                    delivery_id, outcome)  # fmt: skip
        return Attempt(outcome, error)
    subscriber_id, enrollment_id, step_id = held
    _consequences(session, settings, subscriber_id, enrollment_id, step_id, outcome, error,
                  bounced, now)  # fmt: skip
    return Attempt(outcome, error, retry_at, server_down)


def _consequences(
    session: Session, settings: Settings, subscriber_id: int, enrollment_id: int | None,
    step_id: str | None, outcome: Outcome, error: str | None, bounced: bool, now: datetime,
) -> None:  # fmt: skip
    """Move the enrolment on after a send; end it after a skip or a failure; suppress a bounce."""
    enrollment = session.get(Enrollment, enrollment_id) if enrollment_id else None
    if outcome == Outcome.SENT:
        # Only an enrolment still waiting for this very step moves on: never twice, and
        # never one that ended (unsubscribed) while its email was on the wire.
        if (
            enrollment is not None
            and enrollment.status == EnrollmentStatus.ACTIVE
            and enrollment.next_step_id == step_id
        ):
            catalog = catalog_for(settings.sequences_dir)
            advance(session, enrollment, catalog.get(enrollment.sequence), now, catalog)
    elif outcome == Outcome.SKIPPED:
        if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
            enrollment.status, enrollment.ended_at = EnrollmentStatus.EXITED, now
            enrollment.end_reason = (error or "")[:200]
    elif outcome == Outcome.FAILED:
        sub = session.get(Subscriber, subscriber_id)
        if bounced and sub is not None:
            bounce(session, sub, now, error or "hard bounce")
        if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
            enrollment.status, enrollment.ended_at = EnrollmentStatus.FAILED, now
            enrollment.end_reason = f"step {step_id} failed: {error}"[:200]
