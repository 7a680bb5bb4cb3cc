"""Starting a sequence for a person: the enrolment row that every path writes (signup,
confirmation, a tag, an import, a finished sequence's trigger). Which step is due, and
when it goes out, is the journeys package's."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, Sequence
from nurture.store.sql import bulk_insert, insert_each, insert_ignoring_conflicts
from nurture.store.tables import Enrollment, EnrollmentStatus

#: An enrolment is unique per subscriber, sequence and round (`reentry: true`).
ROUND_KEY = ["subscriber_id", "sequence", "round"]


def _enrollment(subscriber_id: int, seq: Sequence, now: datetime) -> dict[str, Any]:
    first = seq.steps[0]
    return {
        "subscriber_id": subscriber_id, "sequence": seq.name, "status": EnrollmentStatus.ACTIVE,
        "next_step_id": first.id, "next_due_at": now + first.after, "enrolled_at": now,
        "round": 1,
    }  # fmt: skip


def enroll(
    session: Session, subscriber_id: int, seq: Sequence, now: datetime, *, again: bool = True
) -> bool:
    """Start `seq` for a subscriber; False if they are in it, or were and the sequence
    has no `reentry: true` (or `again` is False: only a first round). With it, someone
    who finished or left starts a new round (a new enrolment row; the rows and
    deliveries of earlier rounds stay)."""
    values = _enrollment(subscriber_id, seq, now)
    # RETURNING, not rowcount: psycopg reports -1 for a row left out by ON CONFLICT.
    stmt = insert_ignoring_conflicts(session, Enrollment, ROUND_KEY).values(**values)
    if session.execute(stmt.returning(Enrollment.id)).first() is not None:
        return True
    if not (seq.reentry and again):
        return False
    latest = session.execute(
        select(Enrollment.round, Enrollment.status, Enrollment.end_reason)
        .where(Enrollment.subscriber_id == subscriber_id, Enrollment.sequence == seq.name)
        .order_by(Enrollment.round.desc())
        .limit(1)
    ).first()
    if latest is None or latest.status == EnrollmentStatus.ACTIVE:
        return False  # still going through it: one round at a time
    if (latest.end_reason or "").startswith("unsubscribed"):
        return False  # they asked to leave this sequence: a tag does not overrule that
    # Two processes re-enrolling at once both ask for the same round: one row wins.
    next_round = insert_ignoring_conflicts(session, Enrollment, ROUND_KEY).values(
        **values | {"round": latest.round + 1}
    )
    return session.execute(next_round.returning(Enrollment.id)).first() is not None


def enroll_many(session: Session, pairs: Iterable[tuple[int, Sequence]], now: datetime) -> None:
    """`enroll` for many (subscriber, sequence) pairs in one statement (a bulk import):
    first rounds only; someone who already went through a sequence is not put back here."""
    rows = [_enrollment(subscriber_id, seq, now) for subscriber_id, seq in pairs]
    if rows:
        table = cast(Table, Enrollment.__table__)
        bulk_insert(session, table, rows, conflict=ROUND_KEY)


def enroll_triggered(
    session: Session, subscriber_id: int, catalog: Catalog, trigger: str, now: datetime
) -> list[str]:
    """Enrol in every sequence started by `trigger` (e.g. `signup`); the names enrolled."""
    return [
        seq.name
        for seq in catalog.triggered_by(trigger)
        if enroll(session, subscriber_id, seq, now)
    ]


def enroll_new(
    session: Session, subscriber_ids: list[int], seqs: Iterable[Sequence], now: datetime
) -> None:
    """`enroll` for subscribers added in this transaction, who are in no sequence yet:
    one INSERT … SELECT per sequence, the rows made in the database (a bulk import)."""
    table = cast(Table, Enrollment.__table__)
    for seq in seqs:
        values = _enrollment(0, seq, now)
        del values["subscriber_id"]
        insert_each(session, table, "subscriber_id", subscriber_ids, values)
