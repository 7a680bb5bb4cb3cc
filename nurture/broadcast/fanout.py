"""Fan-out: from a broadcast to one delivery per recipient, in batches from a checkpoint.

Each batch is one transaction that locks the broadcast row, writes the next recipients'
deliveries and moves `checkpoint` (the last subscriber id done) together, so a process
killed at any moment leaves either the whole batch or none of it, and the next
`send-due` resumes after the checkpoint. The unique (broadcast, subscriber) index makes
a repeated batch harmless. Deliveries are handed to the same queue as sequence emails
(`queue.dispatch`), so the same rate limits, retries and recovery apply; one written
but never enqueued (a crash right after the commit) is recovered by `send-due` like any
lost queue message.

With `--local-time` every delivery is written when the first zone's time comes, as
`scheduled` with its own `next_attempt_at`, and `send-due` queues it when that comes.

An issue with variants records each email's variant; with a test share only the test
share's emails are written at first, and the rest after the winner is picked
(broadcast/experiment.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture import clock
from nurture.broadcast.audience import next_batch
from nurture.broadcast.experiment import LATER, chooser, pick_due
from nurture.people.segments import audience_clause, issue_topic
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import (
    IN_FLIGHT,
    Broadcast,
    BroadcastState,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
)
from nurture.zones import due_at

#: Recipients per fan-out transaction.
BATCH = 500


@dataclass
class Step:
    """One batch: recipients looked at, emails written, and those to enqueue now."""

    looked_at: int
    written: int
    ready: list[int] = field(default_factory=list)


_DELIVERIES = cast(Table, Delivery.__table__)


def _insert(session: Session, values: list[dict[str, object]]) -> list[tuple[int, str]]:
    """Insert, skipping subscribers who already have this broadcast's delivery. One
    statement compiled once and run for the batch's rows (SQLAlchemy's "insertmanyvalues"
    sends them as multi-row INSERTs), rather than a statement of 500 rows compiled anew
    for each batch."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = module.insert(_DELIVERIES).on_conflict_do_nothing()
    returned = session.connection().execute(
        stmt.returning(_DELIVERIES.c.id, _DELIVERIES.c.status), values
    )
    return [(r.id, r.status) for r in returned]


def fan_out_batch(settings: Settings, broadcast_id: int, size: int | None = None) -> Step | None:
    """Write the next batch; None when there is nothing more to do here (finished,
    cancelled, or another process is writing this broadcast's batch right now)."""
    now = clock.now()
    with session_scope(settings) as session:
        broadcast = session.scalar(
            select(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.state == BroadcastState.SENDING,
                   Broadcast.fanned_out_at.is_(None))
            .with_for_update(skip_locked=True)
        )  # fmt: skip
        if broadcast is None:
            return None
        clause = audience_clause(settings, broadcast.segment, topic=issue_topic(broadcast),
                                 now=now)  # fmt: skip
        variant_for = chooser(session, broadcast)
        rows, last = next_batch(session, clause, broadcast.checkpoint, size or BATCH)
        if last is None:
            broadcast.fanned_out_at = now
            return None
        values: list[dict[str, object]] = []
        for row in rows:
            variant = variant_for(row.email)
            if variant == LATER:  # outside the test share: the winner comes later
                continue
            due = due_at(broadcast, row.timezone, settings.timezone)
            ready = due <= now
            values.append({
                "subscriber_id": row.id, "broadcast_id": broadcast.id, "kind": DeliveryKind.BROADCAST,
                "is_test": False, "created_at": now,
                "status": DeliveryStatus.QUEUED if ready else DeliveryStatus.SCHEDULED,
                "enqueued_at": now if ready else None, "next_attempt_at": None if ready else due,
                "variant": variant,
            })  # fmt: skip
        written = _insert(session, values) if values else []
        broadcast.checkpoint = last
    ready_ids = [i for i, status in written if status == DeliveryStatus.QUEUED]
    return Step(len(rows), len(written), ready_ids)


#: Hands delivery ids to the queue and counts what happened (queue.dispatch): given by
#: the caller, since the queue stands above the domain.
Dispatch = Callable[[Settings, list[int]], Counter[str]]


def fan_out(
    settings: Settings, dispatch: Dispatch, broadcast_id: int,
    on_batch: Callable[[int], None] | None = None,
) -> Counter[str]:  # fmt: skip
    """Write and enqueue every remaining batch of one broadcast that is `sending`."""
    counts: Counter[str] = Counter()
    while (step := fan_out_batch(settings, broadcast_id)) is not None:
        counts["broadcast"] += step.written
        counts.update(dispatch(settings, step.ready))
        if on_batch is not None:
            on_batch(step.looked_at)
    return counts


def start_due(settings: Settings, now: datetime, broadcast_id: int | None = None) -> list[int]:
    """Scheduled broadcasts (or this one) whose time has come become `sending`."""
    due = select(Broadcast.id).where(
        Broadcast.state == BroadcastState.SCHEDULED, Broadcast.send_at <= now
    )
    if broadcast_id is not None:
        due = due.where(Broadcast.id == broadcast_id)
    with session_scope(settings) as session:
        ids = list(session.scalars(due.with_for_update(skip_locked=True)))
        if ids:
            session.execute(
                update(Broadcast)
                .where(Broadcast.id.in_(ids))
                .values(state=BroadcastState.SENDING, started_at=now)
            )
    return ids


def release_scheduled(settings: Settings, dispatch: Dispatch, now: datetime) -> Counter[str]:
    """Queue the `--local-time` emails whose time has come."""
    counts: Counter[str] = Counter()
    while True:
        with session_scope(settings) as session:
            ids = list(
                session.scalars(
                    select(Delivery.id)
                    .where(Delivery.status == DeliveryStatus.SCHEDULED,
                           Delivery.next_attempt_at <= now)
                    .order_by(Delivery.next_attempt_at)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )  # fmt: skip
            if ids:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids))
                    .values(status=DeliveryStatus.QUEUED, enqueued_at=now, next_attempt_at=None)
                )
        counts["broadcast"] += len(ids)
        counts.update(dispatch(settings, ids))
        if len(ids) < BATCH:
            return counts


def finish(settings: Settings, now: datetime) -> None:
    """A fanned-out broadcast with nothing left in flight is `sent`."""
    pending = exists(
        select(Delivery.id).where(Delivery.broadcast_id == Broadcast.id,
                                  Delivery.is_test.is_(False), Delivery.status.in_(IN_FLIGHT))
    )  # fmt: skip
    with session_scope(settings) as session:
        session.execute(
            update(Broadcast)
            .where(Broadcast.state == BroadcastState.SENDING,
                   Broadcast.fanned_out_at.is_not(None), Broadcast.pick_at.is_(None), ~pending)
            .values(state=BroadcastState.SENT, finished_at=now)
        )  # fmt: skip


def fan_out_due_broadcasts(
    settings: Settings, dispatch: Dispatch, broadcast_id: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Counter[str]:  # fmt: skip
    """What `send-due` does for broadcasts: start the due ones, resume any fan-out a
    stopped process left, queue `--local-time` emails whose time came, mark finished
    ones sent, and pick the winners of test shares whose time came (the rest of their
    audience is then fanned out). `counts["broadcast"]` is the number of emails handed
    to the queue.

    With `broadcast_id` (`broadcast send` of an issue due now) only that one is started
    and fanned out; `on_batch` hears of each batch written."""
    now = clock.now()
    start_due(settings, now, broadcast_id)
    if broadcast_id is None:
        pick_due(settings, now)
    if broadcast_id is not None:
        unfinished = [broadcast_id]
    else:
        with session_scope(settings) as session:
            unfinished = list(
                session.scalars(
                    select(Broadcast.id).where(Broadcast.state == BroadcastState.SENDING,
                                               Broadcast.fanned_out_at.is_(None))
                )
            )  # fmt: skip
    counts: Counter[str] = Counter()
    for unfinished_id in unfinished:
        counts.update(fan_out(settings, dispatch, unfinished_id, on_batch))
    counts.update(release_scheduled(settings, dispatch, clock.now()))
    finish(settings, clock.now())
    return counts
