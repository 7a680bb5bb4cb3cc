"""Who is due for what: enrolment, claiming due steps, advancing, recovering stale work.

Every function takes `now` so the same code serves real sending, `simulate` and tests.
Claiming locks rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so many `send-due`
processes share the work; on SQLite every transaction is `BEGIN IMMEDIATE`, which
serialises them. The unique (enrolment, step) constraint is the last line of defence.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from nurture.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus
from nurture.sequences import Catalog, Sequence
from nurture.sql import insert_ignoring_conflicts

#: A queued delivery not picked up by any worker for this long is enqueued again
#: (its message was lost: a crash between commit and enqueue, or a flushed Redis).
STALE_QUEUED = timedelta(minutes=5)
#: A delivery claimed this long ago and still `sending` belongs to a worker that died
#: mid-send. It is sent again: at-least-once, so a lost email is never silent.
STALE_SENDING = timedelta(minutes=10)
#: Deliveries claimed per batch.
BATCH = 500


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


def requeue_stale(session: Session, now: datetime, limit: int = BATCH) -> list[int]:
    """Deliveries whose queue message is lost, whose retry is due, or whose worker died."""
    ids = list(
        session.scalars(
            select(Delivery.id)
            .where(
                or_(
                    (Delivery.status == DeliveryStatus.QUEUED)
                    & (Delivery.enqueued_at < now - STALE_QUEUED),
                    (Delivery.status == DeliveryStatus.RETRY) & (Delivery.next_attempt_at <= now),
                    (Delivery.status == DeliveryStatus.SENDING)
                    & (Delivery.claimed_at < now - STALE_SENDING),
                )
            )
            .order_by(Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status=DeliveryStatus.QUEUED, enqueued_at=now)
        )
    return ids
