"""The send loop: what a worker thread does with one queue message. Deliveries are
claimed, re-checked and composed GROUP at a time, each sent only once it is marked
handed, and each outcome recorded through the state machine in states.py."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, catalog_for
from nurture.delivery import statements as sql
from nurture.delivery.prepare import Found, check, compose_group
from nurture.delivery.ratelimit import Gate
from nurture.delivery.reconnect import Db, connections, lost, reconnecting
from nurture.delivery.states import (
    Attempt,
    Job,
    Outcome,
    claim,
    claimable,
    hand,
    handing,
    held_back,
    postpone,
    record,
    record_sent,
    release,
    temporary,
    unclaim,
)
from nurture.delivery.transports import close_thread_transport, transport_for
from nurture.errors import ConfigError, DeliveryError
from nurture.settings import Settings
from nurture.store.tables import utcnow

log = logging.getLogger(__name__)

#: Deliveries claimed and composed together, in one transaction: their subscribers,
#: suppressions and tags are read in three queries for the group.
GROUP = 25


@dataclass
class Batch:
    counts: Counter[str] = field(default_factory=Counter)
    #: Latest next attempt among the batch's retries: when its message should come back.
    retry_at: datetime | None = None
    #: Not attempted (the gate said stop): to hand back to the queue.
    rest: list[int] = field(default_factory=list)
    #: The SMTP server failed as a whole; the batch stopped and postponed the rest.
    server_down: bool = False

    def add(self, other: Batch) -> None:
        """Count another batch's outcomes in with this one's."""
        self.counts.update(other.counts)
        if other.retry_at is not None:
            self.retry_at = max(self.retry_at or other.retry_at, other.retry_at)
        self.rest += other.rest
        self.server_down |= other.server_down


#: What a thread asks before each send: a gate (ratelimit.Gate), or None for no limits.
Gates = Callable[[], AbstractContextManager[Gate | None]]


def send_concurrently(settings: Settings, delivery_ids: list[int], gates: Gates) -> Batch:
    """Send deliveries here and now from up to NURTURE_SMTP_CONCURRENCY threads, each
    with its own SMTP and database connections and its own groups: while one thread
    waits for the SMTP server's answer, another renders or records. One thread for a
    single group. Each thread closes its SMTP connection when done."""
    shares = [delivery_ids[i : i + GROUP] for i in range(0, len(delivery_ids), GROUP)]
    senders = min(settings.smtp_concurrency, len(shares))
    if senders <= 1:
        with gates() as gate:
            return send_batch(settings, delivery_ids, gate)
    batches: list[Batch] = []
    failed: list[BaseException] = []

    def sender(ids: list[int]) -> None:
        try:
            with gates() as gate:
                batches.append(send_batch(settings, ids, gate))
        except BaseException as e:  # noqa: BLE001 - raised again below, in the caller
            failed.append(e)
        finally:
            close_thread_transport()

    threads = [
        threading.Thread(target=sender, args=([i for s in shares[k::senders] for i in s],),
                         name=f"nurture-send-{k}")
        for k in range(senders)
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise failed[0]
    batch = Batch()
    for done in batches:
        batch.add(done)
    return batch


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
        still_open = reconnecting(db, lambda: claimable(settings, ids, db.session),
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


#: Why the rest of a group is handed back after the database connection was lost.
DB_LOST = "the database connection was lost"


def _send_group(settings: Settings, db: Db, delivery_ids: list[int]) -> list[Attempt]:
    """Claim and re-check a group in one transaction, compose it, and send each email,
    recording each as soon as the server took it.

    The claim is committed before SMTP is touched, and each email is marked `handed_at`
    (committed, fenced by the claim) before its SMTP transaction starts: the first in
    the claim, each next one in the record of the one before. A worker lost mid-group
    leaves its claimed rows `sending`, which `send-due` takes back after
    settings.resend_after; only the one marked handed can go out twice, and a row taken
    back unmarked can no longer be sent by the lost worker. A lost database connection
    is ridden out instead: the sent email is recorded on a fresh connection, and the
    rest of the group is handed back at once (reconnect.py)."""
    claimed_at, tries = utcnow(), itertools.count()
    catalog = catalog_for(settings.sequences_dir)  # once per group: it looks at the files
    jobs, found = reconnecting(
        db, lambda: _claim_group(db, delivery_ids, claimed_at, next(tries) > 0, catalog),
        "claiming deliveries",
    )  # fmt: skip
    results = [Attempt(Outcome.NOT_MINE)] * (len(delivery_ids) - len(jobs))
    try:
        compose_group(settings, found, jobs, catalog)
        to_send = [j for j in jobs if j.outcome is None]
        sent, why_back = _send_each(settings, db, catalog, to_send)
    except BaseException:
        # A bug, or a stop mid-email: what was never handed to SMTP goes back now.
        _postpone(j for j in jobs if j.outcome is None and not j.handed)
        with suppress(Exception):
            _finish(settings, db, jobs, "the worker failed mid-group")
        raise
    results += sent
    results += reconnecting(db, lambda: _finish(settings, db, jobs, why_back),
                            "recording outcomes")  # fmt: skip
    return results


def _claim_group(
    db: Db, delivery_ids: list[int], now: datetime, again: bool, catalog: Catalog
) -> tuple[list[Job], Found]:
    """Claim and re-check in one transaction, marking the first to send handed.
    `again`: an earlier try lost its connection, perhaps after its commit landed, so its
    claim (known by its claim time) is released first and taken afresh."""
    session = db.session
    with session.begin():
        conn = session.connection()
        if again:
            release(session, delivery_ids, now)
        jobs = claim(session, delivery_ids, now)
        found = check(session, jobs, catalog)
        first = next((j for j in jobs if j.outcome is None), None)
        if first is not None:
            first.handed = bool(conn.execute(sql.HAND, handing(first, now)).rowcount)
    if jobs:  # a claim that took rows waited for the disk, and for every record before it
        db.durable()
    return jobs, found


def _send_each(
    settings: Settings, db: Db, catalog: Catalog, to_send: list[Job]
) -> tuple[list[Attempt], str | None]:
    """Send the group's composed emails in turn, each only once it is marked handed.
    Returns the sent ones' results, and why the rest was handed back, if it was."""
    results: list[Attempt] = []
    for i, job in enumerate(to_send):
        if not job.handed:  # not marked with the one before's record: mark it on its own
            try:
                job.handed = hand(db, job)
                why = None if job.handed else held_back(db, job)
            except SQLAlchemyError as e:
                if not lost(e):
                    raise
                _postpone(to_send[i:])
                return results, DB_LOST
            if why is not None:  # suppressed or gone since the claim: it stays unsent
                job.outcome, job.error = Outcome.SKIPPED, why
                continue
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
            result, following_handed = record_sent(db, settings, catalog, job, following)
        except SQLAlchemyError as e:
            if not lost(e):
                raise
            # The server has the email: record it on a fresh connection, however long
            # that takes (within reconnect.RETRY_FOR), and hand the rest back.
            db.close()
            record = partial(record_sent, db, settings, catalog, job, None, again=True)
            results.append(reconnecting(db, record, "recording a sent email")[0])
            _postpone(to_send[i + 1 :])
            return results, DB_LOST
        results.append(result)
        if following is not None:  # not marked: the loop's first step says why
            following.handed = following_handed
    return results, None


def _postpone(jobs: Iterable[Job]) -> None:
    for job in jobs:
        job.postponed = True


def _finish(settings: Settings, db: Db, jobs: list[Job], why_back: str | None) -> list[Attempt]:
    with db.session.begin():
        return _record_others(db.session, settings, jobs, why_back)


def _deliver(settings: Settings, job: Job) -> None:
    """Hand one composed message to the transport; the outcome as RFC 5321 says."""
    assert job.composed is not None
    try:
        transport_for(settings.smtp_url, settings.outbox).send(job.composed.envelope)
    except ConfigError as e:  # the operator can fix it; every email would fail alike
        job.outcome, job.error = temporary(job.delivery.attempts, str(e))
        job.server_down = True
    except DeliveryError as e:
        # Only a recipient refused for good is a bounce; a refused message fails alone;
        # anything temporary, or the server as a whole, is tried again later.
        scope = getattr(e, "scope", "address")
        if e.permanent and scope != "server":
            job.outcome, job.error = Outcome.FAILED, str(e)
        else:
            job.outcome, job.error = temporary(job.delivery.attempts, str(e))
        job.bounced, job.server_down = e.permanent and scope == "address", scope == "server"
    else:
        job.outcome = Outcome.SENT


def _record_others(
    session: Session, settings: Settings, jobs: list[Job], why_back: str | None = None
) -> list[Attempt]:
    """Write the outcomes other than sent (rare: one by one), then hand back the
    deliveries never attempted: at the failed one's retry time when the server failed,
    due now when `why_back` says the worker could not go on (a lost connection)."""
    results = []
    for job in jobs:
        if job.outcome is None or job.outcome == Outcome.SENT:
            continue
        d = job.delivery
        if job.held_until is not None:  # a pause: back when it ends, through send-due
            unclaim(session, [job], job.held_until, job.error)
            results.append(Attempt(Outcome.RETRY, job.error))
            continue
        result = record(session, settings, d.id, d.attempts, job.outcome, job.error,
                         bounced=job.bounced, composed=job.composed,
                         server_down=job.server_down)  # fmt: skip
        # The id, the domain and what the server said: never the address, the message
        # or its links.
        level = logging.INFO if result.outcome == Outcome.SKIPPED else logging.WARNING
        log.log(level, "delivery %s to %s %s: %s", d.id, job.domain, result.outcome, job.error)
        results.append(result)
        if job.server_down and result.retry_at is not None:
            postponed = [j for j in jobs if j.postponed]
            results += unclaim(session, postponed, result.retry_at, job.error)
    if why_back is not None:
        postponed = [j for j in jobs if j.postponed]
        results += unclaim(session, postponed, utcnow(), why_back)
    return results
