"""Who is due for what: enrolment, claiming due steps, advancing, recovering stale work.

Every function takes `now` so the same code serves real sending, `simulate` and tests.
Claiming locks rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so many `send-due`
processes share the work; on SQLite every transaction is `BEGIN IMMEDIATE`, which
serialises them. The unique (enrolment, step) constraint is the last line of defence.
How long work may sit before it is recovered comes from the settings (requeue_after,
resend_after), so an operator, or a test, can shorten it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from nurture.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus
from nurture.sequences import Catalog, Sequence
from nurture.sql import insert_ignoring_conflicts

#: Deliveries claimed per batch.
BATCH = 500
#: The note a delivery keeps once it was taken back from a worker that stopped.
TAKEN_BACK = "taken back from a worker that stopped mid-send: sent again, maybe twice"


def enroll(session: Session, subscriber_id: int, seq: Sequence, now: datetime) -> bool:
    """Start `seq` for a subscriber; False if they were already enrolled in it."""
    first = seq.steps[0]
    stmt = insert_ignoring_conflicts(session, Enrollment, ["subscriber_id", "sequence"]).values(
        subscriber_id=subscriber_id,
        sequence=seq.name,
        status=EnrollmentStatus.ACTIVE,
        next_step_id=first.id,
        next_due_at=now + first.after,
        enrolled_at=now,
    )
    return bool(session.execute(stmt).rowcount)


def enroll_triggered(
    session: Session, subscriber_id: int, catalog: Catalog, trigger: str, now: datetime
) -> list[str]:
    """Enrol in every sequence started by `trigger` (e.g. `signup`); the names enrolled."""
    return [
        seq.name
        for seq in catalog.triggered_by(trigger)
        if enroll(session, subscriber_id, seq, now)
    ]


def claim_due(session: Session, catalog: Catalog, now: datetime, limit: int = BATCH) -> list[int]:
    """Turn due enrolment steps into queued deliveries; returns the new delivery ids.

    The enrolment's `next_due_at` is cleared in the same transaction, so a step is
    claimed once; it is set again when its delivery is sent.
    """
    rows = session.execute(
        select(
            Enrollment.id, Enrollment.subscriber_id, Enrollment.sequence, Enrollment.next_step_id
        )
        .where(
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_due_at <= now,
            Enrollment.sequence.in_(list(catalog.sequences)),
        )
        .order_by(Enrollment.next_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    session.execute(
        update(Enrollment).where(Enrollment.id.in_([r.id for r in rows])).values(next_due_at=None)
    )
    values, vanished = [], []
    for row in rows:
        seq = catalog.sequences[row.sequence]
        if row.next_step_id is None or seq.step(row.next_step_id) is None:
            vanished.append(row.id)
            continue
        values.append(
            {
                "subscriber_id": row.subscriber_id,
                "enrollment_id": row.id,
                "kind": "sequence",
                "sequence": row.sequence,
                "step_id": row.next_step_id,
                "status": DeliveryStatus.QUEUED,
                "created_at": now,
                "enqueued_at": now,
            }
        )
    if vanished:  # the step was deleted from the file; nothing left to send in order
        session.execute(
            update(Enrollment)
            .where(Enrollment.id.in_(vanished))
            .values(status=EnrollmentStatus.COMPLETED, ended_at=now,
                    end_reason="its next step was removed from the sequence")
        )  # fmt: skip
    if not values:
        return []
    stmt = insert_ignoring_conflicts(session, Delivery, ["enrollment_id", "step_id"])
    return list(session.scalars(stmt.values(values).returning(Delivery.id)))


def advance(
    session: Session, enrollment: Enrollment, seq: Sequence | None, sent_at: datetime
) -> None:
    """After a step's delivery is settled, point the enrolment at the following step."""
    enrollment.last_sent_at = sent_at
    following = seq.after(enrollment.next_step_id or "") if seq else None
    if following is None:
        enrollment.status = EnrollmentStatus.COMPLETED
        enrollment.next_step_id = None
        enrollment.next_due_at = None
        enrollment.ended_at = sent_at
        enrollment.end_reason = "finished the sequence"
    else:
        enrollment.next_step_id = following.id
        enrollment.next_due_at = sent_at + following.after


@dataclass(frozen=True)
class Requeued:
    ids: list[int]
    #: How many of `ids` were left `sending` by a worker that stopped mid-send.
    taken_back: int = 0


def requeue_stale(
    session: Session, now: datetime, *, queued_after: timedelta | None, retry_after: timedelta,
    resend_after: timedelta, limit: int = BATCH,
) -> Requeued:  # fmt: skip
    """Deliveries to hand to the queue again, marked `queued` now; see docs/distributed.md.

    - `queued` for `queued_after` (None: leave them, their messages are still waiting):
      the queue message was lost, by a crash between commit and enqueue or a flushed Redis;
    - `retry` whose `next_attempt_at` passed `retry_after` ago: with a broker the retried
      message comes first and this is the safety net; embedded, it is the only way back;
    - `sending` claimed `resend_after` ago: the worker stopped mid-send. Whether the email
      left is unknowable, so it is sent again (at-least-once); `recovered_at` records it
      for `stats`, and `error` says so in `subscribers show`, also once it is sent.
    """
    stale = [
        (Delivery.status == DeliveryStatus.RETRY) & (Delivery.next_attempt_at <= now - retry_after),
        (Delivery.status == DeliveryStatus.SENDING) & (Delivery.claimed_at < now - resend_after),
    ]
    if queued_after is not None:
        stale.append(
            (Delivery.status == DeliveryStatus.QUEUED) & (Delivery.enqueued_at < now - queued_after)
        )
    rows = session.execute(
        select(Delivery.id, Delivery.status)
        .where(or_(*stale))
        .order_by(Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    ids = [r.id for r in rows]
    taken_back = [r.id for r in rows if r.status == DeliveryStatus.SENDING]
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status=DeliveryStatus.QUEUED, enqueued_at=now)
        )
    if taken_back:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(taken_back))
            .values(recovered_at=now, error=TAKEN_BACK)
        )
    return Requeued(ids, len(taken_back))
