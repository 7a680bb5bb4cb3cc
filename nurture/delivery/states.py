"""The delivery state machine: claim, record sent/failed/skipped, postpone, take back.

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
is in scheduling.requeue_stale. The send loop that drives these steps is sending.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Table, select, tuple_, update
from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, catalog_for
from nurture.delivery import statements as sql
from nurture.delivery.compose import Composed
from nurture.delivery.reconnect import Db
from nurture.journeys.scheduling import advance
from nurture.people.events import record as record_event
from nurture.people.subscribers import bounce
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import (
    TO_SEND,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)

log = logging.getLogger(__name__)

_DELIVERIES = cast(Table, Delivery.__table__)
#: Attempts before a temporarily failing delivery (or sales handoff) is given up as failed.
MAX_ATTEMPTS = 8
#: Longest wait between two attempts; the first is the policy's own, then doubles.
MAX_BACKOFF = timedelta(hours=6)


@dataclass(frozen=True)
class RetryPolicy:
    """When a temporary failure is tried again: after `first`, then twice as long each
    time up to MAX_BACKOFF, and given up after MAX_ATTEMPTS. Emails and sales handoffs
    share it; only their first wait differs."""

    first: timedelta
    attempts: int = MAX_ATTEMPTS
    longest: timedelta = MAX_BACKOFF

    @classmethod
    def for_deliveries(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.retry_backoff)

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th attempt failed."""
        return min(self.first * 2 ** max(0, attempts - 1), self.longest)

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.attempts


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
class Job:
    """One claimed delivery on its way: the row as claimed, and what became of it.
    `attempts` of the claimed row is the claim's fencing token."""

    delivery: Any  # the claimed row (statements.CLAIM), not tracked by the ORM
    composed: Composed | None = None
    outcome: Outcome | None = None
    error: str | None = None
    bounced: bool = False
    server_down: bool = False
    #: Marked `handed_at` in the database (committed): its SMTP transaction may start.
    handed: bool = False
    #: Never attempted, and handed back without counting an attempt: the server failed
    #: before its turn, or the database connection was lost.
    postponed: bool = False
    #: The recipient's domain: all of the address that a log line names.
    domain: str = "@?"
    #: The recipient's address hash, for the last suppression check before the wire.
    address_hash: str | None = None
    #: Held by the reader's pause: handed back, due again when the pause ends.
    held_until: datetime | None = None


def sendable_status(kind: str) -> SubscriberStatus:
    """The status a subscriber must still have for a delivery of `kind` to go out: a
    confirmation goes to a pending subscriber, everything else to an active one."""
    return SubscriberStatus.PENDING if kind == DeliveryKind.CONFIRM else SubscriberStatus.ACTIVE


def temporary(token: int, error: str) -> tuple[Outcome, str]:
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
            .where(Delivery.id.in_(delivery_ids), Delivery.status.in_(TO_SEND))
            .values(
                status=DeliveryStatus.RETRY, next_attempt_at=until, error=f"not attempted: {why}"
            )  # fmt: skip
        )
    return int(cast(CursorResult[Any], result).rowcount)


def claimable(settings: Settings, delivery_ids: list[int], held: Session) -> set[int]:
    """Which of these deliveries are still to send (a later claim has the last word)."""
    with _transaction(settings, held) as session:
        return set(
            session.scalars(
                select(Delivery.id).where(Delivery.id.in_(delivery_ids),
                                          Delivery.status.in_(TO_SEND))
            )
        )  # fmt: skip


def claim(session: Session, delivery_ids: list[int], now: datetime) -> list[Job]:
    """Take those of the deliveries still to send, in the order given. The rows (the
    columns statements.CLAIM returns) are plain rows: nothing is tracked by the ORM."""
    rows = session.connection().execute(sql.CLAIM, {"ids": delivery_ids, "now": now})
    claimed = {row.id: row for row in rows}
    return [Job(claimed[i]) for i in delivery_ids if i in claimed]


def release(session: Session, delivery_ids: list[int], now: datetime) -> None:
    """Undo a claim made at `now` whose commit may have landed after its connection was lost."""
    session.connection().execute(sql.RELEASE, {"ids": delivery_ids, "now": now})


def handing(job: Job | None, now: datetime) -> dict[str, Any]:
    """Parameters of statements.HAND for `job` (None: the statement marks nothing)."""
    if job is None:
        return {"hid": None, "htoken": None, "now": now, "hhash": None, "hstatus": None}
    return {"hid": job.delivery.id, "htoken": job.delivery.attempts, "now": now,
            "hhash": job.address_hash, "hstatus": sendable_status(job.delivery.kind)}  # fmt: skip


def hand(db: Db, job: Job) -> bool:
    """Mark `job` handed on its own (after an email that was not sent); False if its
    claim no longer holds, or its address may no longer be mailed (`held_back` says)."""
    params = handing(job, utcnow())
    if db.autocommit is not None:
        return bool(db.autocommit.execute(sql.HAND, params).rowcount)
    with db.session.begin():
        return bool(db.session.connection().execute(sql.HAND, params).rowcount)


def held_back(db: Db, job: Job) -> str | None:
    """Why `job`, not handed, must not go out though its claim holds: its address was
    suppressed (a complaint, a hard bounce) or its subscriber left since the claim.
    None when the claim was lost: the rest of the group is no longer ours either."""
    with db.session.begin():
        row = db.session.connection().execute(sql.HELD_BACK, handing(job, utcnow())).first()
    if row is None:
        return None
    if row.suppressed:
        return "address was suppressed after the email was claimed"
    if row.status != sendable_status(job.delivery.kind):
        return f"subscriber is {row.status}"
    return None


def record_sent(
    db: Db, settings: Settings, catalog: Catalog, job: Job, following: Job | None,
    *, again: bool = False,
) -> tuple[Attempt, bool]:  # fmt: skip
    """Mark one delivery sent if its claim still holds, mark the `following` one handed
    (its SMTP transaction comes next), and move the enrolment on if it still waits for
    this very step (never twice, never one that ended while its email was on the wire):
    on PostgreSQL one statement in one round trip. The last step of a sequence goes
    through `scheduling.advance`, which also starts the sequences its completion
    triggers. Returns the result and whether `following` is now marked handed.

    `again`: the first try lost its connection, maybe after its commit landed; a row
    already recorded as sent by this claim is then this claim's own record."""
    d, composed, now = job.delivery, job.composed, utcnow()
    assert composed is not None
    sent = {"did": d.id, "token": d.attempts, "now": now, "mid": composed.envelope.message_id,
            "subj": composed.rendered.subject[:300]} | handing(following, now)  # fmt: skip
    seq = catalog.get(d.sequence or "") if d.enrollment_id is not None else None
    step = seq.after(d.step_id) if seq and d.step_id else None
    move = step and {"eid": d.enrollment_id, "was": d.step_id, "next": step.id,
                     "due": now + step.after}  # fmt: skip
    if d.enrollment_id is None or move:  # written again after a crash without the mark
        held, handed = db.record(sent, move or None, again=sent | handing(None, now))
    else:  # the sequence's last step: its completion may start others (scheduling.advance)
        with db.session.begin():
            conn = db.session.connection()
            held = conn.execute(sql.SENT, sent).rowcount
            if held and move:
                conn.execute(sql.MOVE_ON, sent | move)
            elif held and d.enrollment_id is not None:
                _consequences(db.session, settings, d.id, d.subscriber_id, d.enrollment_id,
                              d.step_id, Outcome.SENT, None, False, now)  # fmt: skip
            handed = following is not None and conn.execute(sql.HAND, sent).rowcount
    if not held and again:
        with db.session.begin():
            held = db.session.connection().execute(sql.RECORDED, sent).first() is not None
    if not held:
        _overtaken(d.id, Outcome.SENT)
    return Attempt(Outcome.SENT), bool(handed)


def unclaim(session: Session, jobs: list[Job], until: datetime, why: str | None) -> list[Attempt]:
    """Hand back claimed deliveries that were never attempted: due again at `until`,
    and the claim's attempt not counted."""
    if not jobs:
        return []
    t = _DELIVERIES
    session.execute(
        update(t)
        .where(
            tuple_(t.c.id, t.c.attempts).in_([(j.delivery.id, j.delivery.attempts) for j in jobs]),
            t.c.status == DeliveryStatus.SENDING,
        )
        .values(status=DeliveryStatus.RETRY, next_attempt_at=until, attempts=t.c.attempts - 1,
                handed_at=None, error=f"not attempted: {why}")
    )  # fmt: skip
    return [Attempt(Outcome.RETRY, why, until) for _ in jobs]


def _overtaken(delivery_id: int, outcome: Outcome) -> None:
    # Taken back by send-due while this worker looked dead, and claimed again (or
    # forgotten). The newer claim owns the row now; its outcome will be recorded.
    log.warning("delivery %s: %s not recorded, the delivery was claimed again",
                delivery_id, outcome)  # fmt: skip


def record(
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
    if outcome == Outcome.RETRY:
        retry_at = now + RetryPolicy.for_deliveries(settings).delay(token)
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
        _overtaken(delivery_id, outcome)
        return Attempt(outcome, error)
    subscriber_id, enrollment_id, step_id = held
    _consequences(session, settings, delivery_id, subscriber_id, enrollment_id, step_id,
                  outcome, error, bounced, now)  # fmt: skip
    return Attempt(outcome, error, retry_at, server_down)


def _consequences(
    session: Session, settings: Settings, delivery_id: int, subscriber_id: int,
    enrollment_id: int | None,
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
            # the `bounced` event is what every report counts, as for a later bounce
            record_event(session, sub.id, "bounced", now, delivery_id=delivery_id,
                         data={"type": "hard", "reason": error, "provider": "smtp"})  # fmt: skip
            bounce(session, sub, now, error or "hard bounce")
        if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
            enrollment.status, enrollment.ended_at = EnrollmentStatus.FAILED, now
            enrollment.end_reason = f"step {step_id} failed: {error}"[:200]
