"""Who is due for what: enrolment, claiming due steps, advancing, recovering stale work.

Every function takes `now` so the same code serves real sending, `simulate` and tests.
Claiming locks rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so many `send-due`
processes share the work; on SQLite every transaction is `BEGIN IMMEDIATE`, which
serialises them. The unique (enrolment, step) constraint is the last line of defence.
How long work may sit before it is recovered comes from the settings (requeue_after,
resend_after), so an operator, or a test, can shorten it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import (
    Insert,
    Table,
    bindparam,
    case,
    false,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from nurture.content.experiments import HOLDOUT
from nurture.content.sequences import Catalog, Sequence, Step
from nurture.journeys.planner import DueRow, Planner, Verdict, among
from nurture.journeys.sameday import broadcasts_near, defer_for_broadcasts
from nurture.people.enrolment import enroll_triggered
from nurture.settings import Settings
from nurture.store.sql import insert_ignoring_conflicts
from nurture.store.tables import (
    TO_SEND,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    UTCDateTime,
)

#: Deliveries claimed per batch.
BATCH = 2000
#: The note a delivery keeps once it was taken back after its worker had handed it to
#: SMTP (the server may have accepted it before the worker was lost).
TAKEN_BACK = "taken back from a worker lost mid-send: sent again, maybe twice"
#: The note while a delivery taken back before it was handed to SMTP waits to be sent.
TAKEN_BACK_UNSENT = "taken back from a worker lost before sending it: never sent"


def claim_due(
    session: Session, catalog: Catalog, now: datetime, limit: int = BATCH, *,
    settings: Settings | None = None, part: tuple[int, int] | None = None,
    skips: Counter[str] | None = None,
) -> list[int]:  # fmt: skip
    """Turn due enrolment steps into queued deliveries; returns the new delivery ids.

    Each due step is first put to `gates.Planner` (goal, gate, send window, daily cap):
    only what it lets through becomes a delivery; the rest is rescheduled, skipped,
    diverted or ended. The enrolment's `next_due_at` is cleared in the same transaction,
    so a step is claimed once; it is set again when its delivery is sent.

    A batch costs a fixed number of statements, whatever its size, for the common
    verdicts (send, later, wait): rows are read, rescheduled and written in bulk. Only
    the rare endings (exit, skip, divert, a removed step) run a statement per row.

    `part=(k, n)` claims only the subscribers whose id modulo n is k: loops that claim
    side by side (`send_due`) each take their own people, so one person's steps are
    still decided one batch after another.

    `skips` counts the due steps skipped instead of sent: "held out" (a sequence's
    holdout) and "skipped by a gate", so a summary can account for every due step.
    """
    conn = session.connection()  # Core from here: the ORM adds nothing to rows and ids
    rows = _take_due(session, catalog, now, limit, part)
    if not rows:
        return []
    steps = [_step(catalog, r) for r in rows]
    planner = _planner(session, settings, now, rows, steps)
    send, skipped, later, variants = _decide(session, planner, rows, steps, now)
    # One statement each, whatever the batch size: an executemany (pipelined by psycopg,
    # multi-row VALUES by SQLAlchemy) and INSERT … SELECT.
    if later:
        conn.execute(_RESCHEDULE, later)
    if skipped:
        conn.execute(_insert_deliveries(session), skipped)
        if skips is not None:
            skips.update("held out" if d["variant"] == HOLDOUT else "skipped by a gate"
                         for d in skipped)  # fmt: skip
    if not send:
        return []
    queued = conn.execute(_queue(session, send, now)).all()
    # experiments: the variant each email is, decided with it
    chosen = [{"did": did, "v": variants[eid]} for did, eid in queued if eid in variants]
    if chosen:
        conn.execute(_SET_VARIANT, chosen)
    return [did for did, _ in queued]


def _take_due(
    session: Session, catalog: Catalog, now: datetime, limit: int, part: tuple[int, int] | None
) -> list[Any]:
    """Lock the due enrolments of this part and clear their `next_due_at`: claimed once."""
    conn = session.connection()
    mine = Enrollment.subscriber_id % part[1] == part[0] if part else true()
    rows = conn.execute(
        select(
            Enrollment.id,
            Enrollment.subscriber_id,
            Enrollment.sequence,
            Enrollment.next_step_id,
            # what `after` counts from; one column, so one timestamp to convert a row
            func.coalesce(Enrollment.last_sent_at, Enrollment.enrolled_at).label("since"),
            Subscriber.timezone,
            Subscriber.email,
        )  # fmt: skip
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_due_at <= now,
            Enrollment.sequence.in_(list(catalog.sequences)),
            mine,
        )
        .order_by(Enrollment.next_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Enrollment)  # the enrolments, not the people
    ).all()
    if rows:
        conn.execute(
            update(_ENROLLMENTS).where(among(session, _ENROLLMENTS.c.id, [r.id for r in rows]))
            .values(next_due_at=None, waiting_for=None)
        )  # fmt: skip
    return list(rows)


def _planner(
    session: Session, settings: Settings | None, now: datetime, rows: list[Any],
    steps: list[tuple[Sequence, Step | None]],
) -> Planner:  # fmt: skip
    """A planner loaded with the batch's people (and the facts of those a goal or gate needs)."""
    planner = Planner(session, settings.timezone if settings else "UTC",
                      settings.max_per_day if settings else 1, now)  # fmt: skip
    if settings is not None and broadcasts_near(session, now):
        planner.defer = partial(defer_for_broadcasts, session, settings)
    planner.load(
        {r.subscriber_id: r.timezone for r in rows},
        emails={r.subscriber_id: r.email for r in rows},
        facts_for=[r.subscriber_id for r, (seq, step) in zip(rows, steps, strict=True)
                   if step is not None and (seq.exit_when is not None or step.when is not None)],
    )  # fmt: skip
    return planner


def _decide(
    session: Session, planner: Planner, rows: list[Any], steps: list[tuple[Sequence, Step | None]],
    now: datetime,
) -> tuple[list[int], list[dict[str, object]], list[dict[str, object]], dict[int, str]]:  # fmt: skip
    """Put each due step to the planner: (enrolments to send now, skipped deliveries to
    write, reschedules, the experiment variant of each enrolment's email). The rare
    endings are written here, a statement each."""
    send: list[int] = []  # enrolments whose step goes out now
    skipped: list[dict[str, object]] = []
    later: list[dict[str, object]] = []
    variants: dict[int, str] = {}
    for row, (seq, step) in zip(rows, steps, strict=True):
        if step is None:  # the step was deleted from the file; nothing left to send in order
            _end(session, row.id, now, EnrollmentStatus.COMPLETED,
                 "its next step was removed from the sequence")  # fmt: skip
            continue
        due_at = row.since + step.after
        decision = planner.decide(
            DueRow(row.id, row.subscriber_id, row.sequence, step.id, due_at), seq, step
        )
        if decision.verdict == Verdict.SEND:
            send.append(row.id)
            if decision.variant is not None:
                variants[row.id] = decision.variant
            continue
        base = {"subscriber_id": row.subscriber_id, "enrollment_id": row.id,
                "kind": DeliveryKind.SEQUENCE, "sequence": row.sequence, "step_id": step.id,
                "created_at": now, "variant": decision.variant}  # fmt: skip
        if decision.verdict in (Verdict.LATER, Verdict.WAIT):
            later.append({"enrollment_id": row.id, "at": decision.at,
                          "why": decision.reason[:200]})  # fmt: skip
        elif decision.verdict == Verdict.EXIT:
            if step.when is not None and decision.reason.startswith("gate"):
                skipped.append({**base, "status": DeliveryStatus.SKIPPED, "error": decision.reason})
            _end(session, row.id, now, EnrollmentStatus.EXITED, decision.reason)
            _cancel_queued(session, row.id, decision.reason)
        else:  # SKIP or DIVERT: the gated step is recorded as skipped, with the reason
            skipped.append({**base, "status": DeliveryStatus.SKIPPED, "error": decision.reason})
            target = seq.step(decision.target) if decision.target else seq.after(step.id)
            _move(session, row.id, target, now)
    return send, skipped, later, variants


_ENROLLMENTS = cast(Table, Enrollment.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)
_RESCHEDULE = (
    update(_ENROLLMENTS)
    .where(_ENROLLMENTS.c.id == bindparam("enrollment_id"))
    .values(next_due_at=bindparam("at"), waiting_for=bindparam("why"))
)
_SET_VARIANT = (
    update(_DELIVERIES).where(_DELIVERIES.c.id == bindparam("did")).values(variant=bindparam("v"))
)


def _queue(session: Session, enrollment_ids: list[int], now: datetime) -> Insert:
    """A queued delivery for each enrolment's next step, returning the new ids: one
    INSERT … SELECT from the enrolments (locked by this transaction, their step as
    claimed), so nothing of the rows travels but their ids."""
    e = _ENROLLMENTS
    at = literal(now, UTCDateTime())
    rows = select(
        e.c.subscriber_id, e.c.id, e.c.sequence, e.c.next_step_id, literal(DeliveryKind.SEQUENCE.value),
        literal(DeliveryStatus.QUEUED.value), false(), literal(0), at, at,
    ).where(among(session, e.c.id, enrollment_ids))  # fmt: skip
    columns = ["subscriber_id", "enrollment_id", "sequence", "step_id", "kind", "status",
               "is_test", "attempts", "created_at", "enqueued_at"]  # fmt: skip
    return (
        _insert_deliveries(session)
        .from_select(columns, rows)
        .returning(_DELIVERIES.c.id, _DELIVERIES.c.enrollment_id)
    )


def _insert_deliveries(session: Session) -> Insert:
    """INSERT into deliveries, a step already written for the enrolment left alone."""
    return insert_ignoring_conflicts(session, _DELIVERIES, ["enrollment_id", "step_id"])


def _step(catalog: Catalog, row: Any) -> tuple[Sequence, Step | None]:
    seq = catalog.sequences[row.sequence]
    return seq, seq.step(row.next_step_id or "")


def _end(session: Session, enrollment_id: int, now: datetime, status: str, reason: str) -> None:
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(status=status, next_due_at=None, ended_at=now, end_reason=reason)
    )


def _cancel_queued(session: Session, enrollment_id: int, reason: str) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.enrollment_id == enrollment_id,
               Delivery.status.in_(TO_SEND))
        .values(status=DeliveryStatus.CANCELLED, error=reason)
    )  # fmt: skip


def _move(session: Session, enrollment_id: int, target: Step | None, now: datetime) -> None:
    """Point the enrolment at `target`, due its `after` from now; the end if None."""
    if target is None:
        _end(session, enrollment_id, now, EnrollmentStatus.COMPLETED, "finished the sequence")
        return
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(next_step_id=target.id, next_due_at=now + target.after)
    )


def advance(
    session: Session, enrollment: Enrollment, seq: Sequence | None, sent_at: datetime,
    catalog: Catalog | None = None,
) -> None:  # fmt: skip
    """After a step's delivery is settled, point the enrolment at the following step;
    at the end, start the sequences whose trigger is `completed:<this one>`."""
    enrollment.last_sent_at = sent_at
    following = seq.after(enrollment.next_step_id or "") if seq else None
    if following is None:
        enrollment.status = EnrollmentStatus.COMPLETED
        enrollment.next_step_id = None
        enrollment.next_due_at = None
        enrollment.ended_at = sent_at
        enrollment.end_reason = "finished the sequence"
        if catalog is not None:
            trigger = f"completed:{enrollment.sequence}"
            enroll_triggered(session, enrollment.subscriber_id, catalog, trigger, sent_at)
    else:
        enrollment.next_step_id = following.id
        enrollment.next_due_at = sent_at + following.after


@dataclass(frozen=True)
class Requeued:
    ids: list[int]
    #: How many of `ids` were left `sending` by a worker that was lost (stopped, or cut
    #: off from the database for longer than it waits) ...
    taken_back: int = 0
    #: ... and how many of those it had handed to SMTP: they may go out twice. The
    #: others were never sent, and will be sent once.
    maybe_sent: int = 0


def requeue_stale(
    session: Session, now: datetime, *, queued_after: timedelta | None, retry_after: timedelta,
    resend_after: timedelta, limit: int = BATCH,
) -> Requeued:  # fmt: skip
    """Deliveries to hand to the queue again, marked `queued` now; see docs/distributed.md.

    - `queued` for `queued_after` (None: leave them, their messages are still waiting):
      the queue message was lost, by a crash between commit and enqueue or a flushed Redis;
    - `retry` whose `next_attempt_at` passed `retry_after` ago: with a broker the retried
      message comes first and this is the safety net; embedded, it is the only way back;
    - `sending` claimed `resend_after` ago: its worker was lost. If the worker had handed
      it to SMTP (`handed_at`), whether the email left is unknowable, so it is sent again
      (at-least-once) and marked `maybe_twice`; if not, the worker can no longer send it
      (every send is fenced by its claim) and it is simply sent once. `recovered_at`
      records either for `stats`, and `error` says which in `subscribers show`.
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
        select(Delivery.id, Delivery.status, Delivery.handed_at.is_not(None).label("handed"))
        .where(or_(*stale))
        .order_by(Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    ids = [r.id for r in rows]
    taken_back = [r.id for r in rows if r.status == DeliveryStatus.SENDING]
    maybe_sent = sum(1 for r in rows if r.status == DeliveryStatus.SENDING and r.handed)
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status=DeliveryStatus.QUEUED, enqueued_at=now)
        )
    if taken_back:
        twice = Delivery.maybe_twice | Delivery.handed_at.is_not(None)  # the row as locked
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(taken_back))
            .values(recovered_at=now, maybe_twice=twice, handed_at=None,
                    error=case((twice, TAKEN_BACK), else_=TAKEN_BACK_UNSENT))
        )  # fmt: skip
    return Requeued(ids, len(taken_back), maybe_sent)
