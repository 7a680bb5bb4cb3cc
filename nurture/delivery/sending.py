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

import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    CursorResult,
    Table,
    Update,
    bindparam,
    case,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.content.rendering import SubscriberView
from nurture.content.sequences import Catalog, catalog_for
from nurture.delivery.compose import Composed, compose_confirmation, compose_step
from nurture.delivery.reconnect import Db, connections, lost, reconnecting
from nurture.delivery.transports import transport_for
from nurture.errors import ConfigError, DeliveryError, TemplateError
from nurture.journeys.scheduling import TAKEN_BACK, advance
from nurture.logsafe import bug_summary, domain_of, frames
from nurture.people.subscribers import bounce, email_hash
from nurture.settings import DEFAULT_RETRY_BACKOFF, Settings
from nurture.store.engine import session_scope
from nurture.store.tables import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    Tag,
    utcnow,
)

if TYPE_CHECKING:
    from nurture.delivery.ratelimit import Gate

log = logging.getLogger(__name__)

_DELIVERIES = cast(Table, Delivery.__table__)
#: Deliveries claimed and composed together, in one transaction: their subscribers,
#: suppressions and tags are read in three queries for the group.
GROUP = 25
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


def attempt(settings: Settings, delivery_id: int) -> Attempt:
    """Claim, re-check, compose, send and record one delivery."""
    with connections(settings) as db:
        [result] = _send_group(settings, db, [delivery_id])
    return result


def send_batch(settings: Settings, delivery_ids: list[int], gate: Gate | None = None) -> Batch:
    """Send deliveries the way a worker thread does with one queue message, GROUP at a time.

    `gate` (ratelimit.Throttle) is asked before each send and may wait for the rate and
    an SMTP slot; it answers False to stop, and the rest is returned to hand back. When
    the server fails as a whole the rest is postponed with the failed one rather than
    tried one by one against a dead server: send-due must never hang for minutes.
    """
    with connections(settings) as db:
        return _send_all(settings, delivery_ids, gate, db)


def _send_all(settings: Settings, delivery_ids: list[int], gate: Gate | None, db: Db) -> Batch:
    batch = Batch()
    ids = list(dict.fromkeys(delivery_ids))  # a message naming a delivery twice sends it once
    batch.counts[Outcome.NOT_MINE] += len(delivery_ids) - len(ids)
    # Paced by a rate: claim one at a time, and spend the rate on deliveries still to
    # send, not on a repeated message's.
    paced = gate is not None and gate.paced
    if paced:
        still_open = reconnecting(db, lambda: _claimable(settings, ids, db.session),
                                  "reading what is still to send")  # fmt: skip
        batch.counts[Outcome.NOT_MINE] += sum(1 for i in ids if i not in still_open)
        ids = [i for i in ids if i in still_open]
    size = 1 if paced else GROUP
    done = 0
    while done < len(ids):
        group = ids[done : done + size]
        granted = _granted(gate, len(group))
        results = _send_group(settings, db, group[:granted]) if granted else []
        done += granted
        for result in results:
            batch.counts[result.outcome] += 1
            if result.retry_at is not None:
                batch.retry_at = max(batch.retry_at or result.retry_at, result.retry_at)
        down = next((r for r in results if r.server_down and r.retry_at is not None), None)
        if down is not None:
            assert down.retry_at is not None
            rest = partial(postpone, settings, ids[done:], down.retry_at, down.error, db.session)
            batch.counts[Outcome.RETRY] += reconnecting(db, rest, "postponing the rest")
            batch.server_down = True
            break
        if granted < len(group):
            batch.rest = ids[done:]
            break
    return batch


def _granted(gate: Gate | None, wanted: int) -> int:
    """How many sends the gate allows now, asking once per send, up to `wanted`."""
    if gate is None:
        return wanted
    for n in range(wanted):
        if not gate():
            return n
    return wanted


@dataclass
class _Job:
    """One claimed delivery on its way: the row as claimed, and what became of it.
    `attempts` of the claimed row is the claim's fencing token."""

    delivery: Any  # the claimed row: Delivery's columns, not tracked by the ORM
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


#: Why the rest of a group is handed back after the database connection was lost.
DB_LOST = "the database connection was lost"


def _send_group(settings: Settings, db: Db, delivery_ids: list[int]) -> list[Attempt]:
    """Claim and compose a group in one transaction; send each, recording each email
    as soon as the server took it.

    The claim is committed before SMTP is touched, and each email is marked `handed_at`
    (committed, fenced by the claim) before its SMTP transaction starts: the first in
    the claim, each next one in the record of the one before. A worker lost mid-group
    leaves its claimed rows `sending`, which `send-due` takes back after
    settings.resend_after; only the one marked handed can go out twice, and a row taken
    back unmarked can no longer be sent by the lost worker. A lost database connection
    is ridden out instead: the sent email is recorded on a fresh connection, and the
    rest of the group is handed back at once (reconnect.py)."""
    claimed_at, tries = utcnow(), itertools.count()
    jobs, catalog = reconnecting(
        db, lambda: _claim_group(settings, db, delivery_ids, claimed_at, next(tries) > 0),
        "claiming deliveries",
    )  # fmt: skip
    results = [Attempt(Outcome.NOT_MINE)] * (len(delivery_ids) - len(jobs))
    to_send = [j for j in jobs if j.outcome is None]
    try:
        sent, why_back = _send_each(settings, db, catalog, to_send)
    except BaseException:
        # A bug, or a stop mid-email: what was never handed to SMTP goes back now.
        _postpone(j for j in to_send if j.outcome is None and not j.handed)
        with suppress(Exception):
            _finish(settings, db, jobs, "the worker failed mid-group")
        raise
    results += sent
    results += reconnecting(db, lambda: _finish(settings, db, jobs, why_back),
                            "recording outcomes")  # fmt: skip
    return results


def _claim_group(
    settings: Settings, db: Db, delivery_ids: list[int], now: datetime, again: bool
) -> tuple[list[_Job], Catalog]:
    """Claim, re-check and compose in one transaction, marking the first to send handed.
    `again`: an earlier try lost its connection, perhaps after its commit landed, so its
    claim (known by its claim time) is released first and taken afresh."""
    session = db.session
    with session.begin():
        conn = session.connection()
        if again:
            conn.execute(_RELEASE, {"ids": delivery_ids, "now": now})
        jobs = _claim(session, delivery_ids, now)
        catalog = _prepare(settings, session, jobs)
        first = next((j for j in jobs if j.outcome is None), None)
        if first is not None:
            first.handed = bool(conn.execute(_HAND, _handing(first, now)).rowcount)
    return jobs, catalog


def _send_each(
    settings: Settings, db: Db, catalog: Catalog, to_send: list[_Job]
) -> tuple[list[Attempt], str | None]:
    """Send the group's composed emails in turn, each only once it is marked handed.
    Returns the sent ones' results, and why the rest was handed back, if it was."""
    results: list[Attempt] = []
    for i, job in enumerate(to_send):
        if not job.handed:  # the one before was not sent: mark this one on its own
            try:
                job.handed = _hand(db, job)
            except SQLAlchemyError as e:
                if not lost(e):
                    raise
                _postpone(to_send[i:])
                return results, DB_LOST
            if not job.handed:  # taken back meanwhile: the rest is no longer ours either
                break
        _deliver(settings, job)
        if job.server_down:
            _postpone(to_send[i + 1 :])
            break
        if job.outcome != Outcome.SENT:
            continue
        following = to_send[i + 1] if i + 1 < len(to_send) else None
        try:
            result, following_handed = _record_sent(db, settings, catalog, job, following)
        except SQLAlchemyError as e:
            if not lost(e):
                raise
            # The server has the email: record it on a fresh connection, however long
            # that takes (within reconnect.RETRY_FOR), and hand the rest back.
            db.close()
            record = partial(_record_sent, db, settings, catalog, job, None, again=True)
            results.append(reconnecting(db, record, "recording a sent email")[0])
            _postpone(to_send[i + 1 :])
            return results, DB_LOST
        results.append(result)
        if following is not None:
            following.handed = following_handed
            if not following_handed:  # taken back meanwhile (see above)
                break
    return results, None


def _postpone(jobs: Iterable[_Job]) -> None:
    for job in jobs:
        job.postponed = True


def _finish(settings: Settings, db: Db, jobs: list[_Job], why_back: str | None) -> list[Attempt]:
    with db.session.begin():
        return _record_others(db.session, settings, jobs, why_back)


def _deliver(settings: Settings, job: _Job) -> None:
    """Hand one composed message to the transport; the outcome as RFC 5321 says."""
    assert job.composed is not None
    try:
        transport_for(settings.smtp_url, settings.outbox).send(job.composed.envelope)
    except ConfigError as e:  # the operator can fix it; every email would fail alike
        job.outcome, job.error = _temporary(job.delivery.attempts, str(e))
        job.server_down = True
    except DeliveryError as e:
        # Only a recipient refused for good is a bounce; a refused message fails alone;
        # anything temporary, or the server as a whole, is tried again later.
        scope = getattr(e, "scope", "address")
        if e.permanent and scope != "server":
            job.outcome, job.error = Outcome.FAILED, str(e)
        else:
            job.outcome, job.error = _temporary(job.delivery.attempts, str(e))
        job.bounced, job.server_down = e.permanent and scope == "address", scope == "server"
    else:
        job.outcome = Outcome.SENT


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


# -- the statements of the send path, built once: each runs for every group ------------
_d = _DELIVERIES
_s = cast(Table, Subscriber.__table__)
_e = cast(Table, Enrollment.__table__)
_ids = bindparam("ids", expanding=True)
_CLAIM = (
    update(_d)
    .where(_d.c.id.in_(_ids), _d.c.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]))
    .values(status=DeliveryStatus.SENDING, claimed_at=bindparam("now"),
            attempts=_d.c.attempts + 1, handed_at=None)
    .returning(*_d.c)
)  # fmt: skip
#: Undoes a claim made at `now` whose commit may have landed after its connection was
#: lost; the claim that follows in the same transaction takes the rows again.
_RELEASE = (
    update(_d)
    .where(_d.c.id.in_(_ids), _d.c.status == DeliveryStatus.SENDING,
           _d.c.claimed_at == bindparam("now"))
    .values(status=DeliveryStatus.RETRY, next_attempt_at=bindparam("now"),
            attempts=_d.c.attempts - 1, handed_at=None)
)  # fmt: skip
#: Marks a claimed delivery as handed to SMTP, if its claim (`htoken`) still holds:
#: committed before its SMTP transaction starts, so `send-due` knows what may have left.
_HAND = (
    update(_d)
    .where(_d.c.id == bindparam("hid"), _d.c.attempts == bindparam("htoken"),
           _d.c.status == DeliveryStatus.SENDING)
    .values(handed_at=bindparam("now"))
)  # fmt: skip
#: Each delivery's subscriber, and its enrolment's state.
_READERS = (
    select(_d.c.id.label("delivery_id"), _s.c.id, _s.c.email, _s.c.first_name, _s.c.timezone,
           _s.c.attributes, _s.c.status, _s.c.link_key,
           _e.c.status.label("enrollment_status"))
    .select_from(_d.join(_s, _s.c.id == _d.c.subscriber_id)
                 .outerjoin(_e, _e.c.id == _d.c.enrollment_id))
    .where(_d.c.id.in_(_ids))
)  # fmt: skip
_SUPPRESSED = select(Suppression.email_hash).where(
    Suppression.email_hash.in_(bindparam("hashes", expanding=True))
)
_TAGS = (
    select(Tag.subscriber_id, Tag.name)
    .where(Tag.subscriber_id.in_(_ids))
    .order_by(Tag.subscriber_id, Tag.name)
)
#: Fenced by the claim's number; executed once per sent delivery, in one executemany.
_SENT = (
    update(_d)
    .where(_d.c.id == bindparam("did"), _d.c.attempts == bindparam("token"),
           _d.c.status == DeliveryStatus.SENDING)
    .values(status=DeliveryStatus.SENT, sent_at=bindparam("now"), message_id=bindparam("mid"),
            subject=bindparam("subj"),
            # keeping the note that it may have gone out twice
            error=case((_d.c.maybe_twice, TAKEN_BACK), else_=None))
)  # fmt: skip


def _move_on(enrollment_id: Any) -> Update:
    """An enrolment moves on only while it still waits for the step just sent."""
    return (
        update(_e)
        .where(_e.c.id == enrollment_id, _e.c.next_step_id == bindparam("was"),
               _e.c.status == EnrollmentStatus.ACTIVE)
        .values(next_step_id=bindparam("next"), next_due_at=bindparam("due"),
                last_sent_at=bindparam("now"))
    )  # fmt: skip


_MOVE_ON = _move_on(bindparam("eid"))


#: A sent email's record, the next one's mark (and its enrolment's move) in one
#: statement: (sent, next handed) counts. PostgreSQL runs data-modifying CTEs once,
#: even unread.
_sent_cte = _SENT.returning(_d.c.enrollment_id).cte("sent")
_SENT_AND_HANDED = select(
    select(func.count()).select_from(_sent_cte).scalar_subquery(),
    select(func.count()).select_from(_HAND.returning(_d.c.id).cte("handed")).scalar_subquery(),
)
_SENT_MOVED_AND_HANDED = _SENT_AND_HANDED.add_cte(_move_on(_sent_cte.c.enrollment_id).cte("moved"))
_RECORDED = select(_d.c.id).where(
    _d.c.id == bindparam("did"), _d.c.attempts == bindparam("token"),
    _d.c.status == DeliveryStatus.SENT, _d.c.message_id == bindparam("mid"),
)  # fmt: skip


def _handing(job: _Job | None, now: datetime) -> dict[str, Any]:
    """Parameters of _HAND for `job` (None: the statement marks nothing)."""
    if job is None:
        return {"hid": None, "htoken": None, "now": now}
    return {"hid": job.delivery.id, "htoken": job.delivery.attempts, "now": now}


def _hand(db: Db, job: _Job) -> bool:
    """Mark `job` handed on its own (after an email that was not sent); False if its
    claim no longer holds."""
    params = _handing(job, utcnow())
    if db.autocommit is not None:
        return bool(db.autocommit.execute(_HAND, params).rowcount)
    with db.session.begin():
        return bool(db.session.connection().execute(_HAND, params).rowcount)


def _claim(session: Session, delivery_ids: list[int], now: datetime) -> list[_Job]:
    """Take those of the deliveries still to send, in the order given. The rows (with
    every column of Delivery) are plain rows: nothing is tracked by the ORM."""
    rows = session.connection().execute(_CLAIM, {"ids": delivery_ids, "now": now})
    claimed = {row.id: row for row in rows}
    return [_Job(claimed[i]) for i in delivery_ids if i in claimed]


def _prepare(settings: Settings, session: Session, jobs: list[_Job]) -> Catalog:
    """Re-check and compose each claimed delivery, reading what they need in three
    queries for the whole group; a delivery that must not go out gets its outcome here."""
    catalog = catalog_for(settings.sequences_dir)  # once per group: it looks at the files
    if not jobs:
        return catalog
    found = _Found.load(session, jobs)
    for job in jobs:
        if (reader := found.readers.get(job.delivery.id)) is not None:
            job.domain = domain_of(reader.email)
        reason = found.why_not(job.delivery)
        if reason is not None:
            job.outcome, job.error = Outcome.SKIPPED, reason
            continue
        token = job.delivery.attempts
        try:
            job.composed = _compose(settings, session, catalog, job.delivery,
                                    found.view(job.delivery))  # fmt: skip
        except TemplateError as e:  # a broken template will not mend itself
            job.outcome, job.error = Outcome.FAILED, str(e)
        except ConfigError as e:  # the operator can fix it; keep the email for later
            job.outcome, job.error = Outcome.RETRY, str(e)
        except SQLAlchemyError:
            raise
        except Exception as e:  # a bug: count the attempt, so it cannot loop forever
            # Never the exception's text or repr: a UnicodeEncodeError's carries the
            # whole email, with its confirm and unsubscribe links.
            job.outcome, job.error = _temporary(token, bug_summary(e))
            log.error("delivery %s to %s could not be composed: %s\n%s", job.delivery.id,
                      job.domain, job.error, frames(e))  # fmt: skip
    return catalog


@dataclass
class _Found:
    """What a group's checks and templates read: each delivery's subscriber and
    enrolment state, suppressions and tags, each loaded for the whole group at once."""

    readers: dict[int, Any]  # by delivery id
    suppressed: set[str]
    tags: dict[int, list[str]]  # by subscriber id

    @classmethod
    def load(cls, session: Session, jobs: list[_Job]) -> _Found:
        conn = session.connection()
        readers = {
            row.delivery_id: row
            for row in conn.execute(_READERS, {"ids": [j.delivery.id for j in jobs]})
        }
        hashes = list({email_hash(row.email) for row in readers.values()})
        suppressed = set(conn.execute(_SUPPRESSED, {"hashes": hashes}).scalars())
        tags: dict[int, list[str]] = {}
        sub_ids = list({row.id for row in readers.values()})
        for sub_id, name in conn.execute(_TAGS, {"ids": sub_ids}):
            tags.setdefault(sub_id, []).append(name)
        return cls(readers, suppressed, tags)

    def why_not(self, delivery: Any) -> str | None:
        """The reason this delivery must not go out now, if there is one."""
        sub = self.readers.get(delivery.id)
        if sub is None:
            return "subscriber no longer exists"
        if email_hash(sub.email) in self.suppressed:
            return "address is suppressed"
        wanted = SubscriberStatus.PENDING if delivery.kind == "confirm" else SubscriberStatus.ACTIVE
        if sub.status != wanted:
            return f"subscriber is {sub.status}"
        if delivery.enrollment_id is not None and sub.enrollment_status != EnrollmentStatus.ACTIVE:
            return f"enrolment is {sub.enrollment_status}"
        return None

    def view(self, delivery: Any) -> SubscriberView:
        sub = self.readers[delivery.id]
        return SubscriberView(
            email=sub.email, first_name=sub.first_name, timezone=sub.timezone,
            attributes=dict(sub.attributes or {}), tags=tuple(self.tags.get(sub.id, ())),
            link_key=sub.link_key,
        )  # fmt: skip


def _compose(settings: Settings, session: Session, catalog: Catalog, delivery: Any,
             view: SubscriberView) -> Composed:  # fmt: skip
    if delivery.kind == "confirm":
        return compose_confirmation(settings, view, delivery.subscriber_id)
    if delivery.kind == "broadcast":
        from nurture.broadcast.compose import compose_broadcast

        return compose_broadcast(settings, session, delivery, view)
    seq = catalog.get(delivery.sequence or "")
    step = seq.step(delivery.step_id or "") if seq else None
    if seq is None or step is None:
        raise TemplateError(f"step {delivery.sequence}/{delivery.step_id} no longer exists")
    return compose_step(settings, seq, step, view, delivery.subscriber_id, delivery.id)


def _record_others(
    session: Session, settings: Settings, jobs: list[_Job], why_back: str | None = None
) -> list[Attempt]:
    """Write the outcomes other than sent (rare: one by one), then hand back the
    deliveries never attempted: at the failed one's retry time when the server failed,
    due now when `why_back` says the worker could not go on (a lost connection)."""
    results = []
    for job in jobs:
        if job.outcome is None or job.outcome == Outcome.SENT:
            continue
        d = job.delivery
        result = _record(session, settings, d.id, d.attempts, job.outcome, job.error,
                         bounced=job.bounced, composed=job.composed,
                         server_down=job.server_down)  # fmt: skip
        # The id, the domain and what the server said: never the address, the message
        # or its links.
        level = logging.INFO if result.outcome == Outcome.SKIPPED else logging.WARNING
        log.log(level, "delivery %s to %s %s: %s", d.id, job.domain, result.outcome, job.error)
        results.append(result)
        if job.server_down and result.retry_at is not None:
            postponed = [j for j in jobs if j.postponed]
            results += _unclaim(session, postponed, result.retry_at, job.error)
    if why_back is not None:
        postponed = [j for j in jobs if j.postponed]
        results += _unclaim(session, postponed, utcnow(), why_back)
    return results


def _record_sent(
    db: Db, settings: Settings, catalog: Catalog, job: _Job, following: _Job | None,
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
            "subj": composed.rendered.subject[:300]} | _handing(following, now)  # fmt: skip
    seq = catalog.get(d.sequence or "") if d.enrollment_id is not None else None
    step = seq.after(d.step_id) if seq and d.step_id else None
    move = step and {"eid": d.enrollment_id, "was": d.step_id, "next": step.id,
                     "due": now + step.after}  # fmt: skip
    autocommit = db.autocommit
    if autocommit is not None and d.enrollment_id is None:
        held, handed = autocommit.execute(_SENT_AND_HANDED, sent).one()
    elif autocommit is not None and move:
        held, handed = autocommit.execute(_SENT_MOVED_AND_HANDED, sent | move).one()
    else:
        with db.session.begin():
            conn = db.session.connection()
            held = conn.execute(_SENT, sent).rowcount
            if held and move:
                conn.execute(_MOVE_ON, sent | move)
            elif held and d.enrollment_id is not None:
                _consequences(db.session, settings, d.subscriber_id, d.enrollment_id,
                              d.step_id, Outcome.SENT, None, False, now)  # fmt: skip
            handed = following is not None and conn.execute(_HAND, sent).rowcount
    if not held and again:
        with db.session.begin():
            held = db.session.connection().execute(_RECORDED, sent).first() is not None
    if not held:
        _overtaken(d.id, Outcome.SENT)
    return Attempt(Outcome.SENT), bool(handed)


def _unclaim(session: Session, jobs: list[_Job], until: datetime, why: str | None) -> list[Attempt]:
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
        note = case((_DELIVERIES.c.maybe_twice, TAKEN_BACK), else_=None)
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
        _overtaken(delivery_id, outcome)
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
