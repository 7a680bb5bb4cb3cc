"""The same-day rule: a broadcast and a sequence email never land on the same day.

On a day (in the subscriber's own zone) when a subscriber receives a broadcast, the
broadcast wins: a sequence step due that day waits one day, at the same wall-clock
time, and again if the next day has a broadcast too (at most MAX_DEFER_DAYS). Broadcasts
are never moved for sequences. The scheduler calls `defer_for_broadcasts` with the time
a step would be due and uses the time it returns.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from nurture.people.segments import audience_clause, issue_topic
from nurture.settings import Settings
from nurture.store.tables import (
    NOT_GOING,
    Broadcast,
    BroadcastState,
    Delivery,
    Subscriber,
)
from nurture.zones import due_at, zone_for

#: A step is pushed back by at most this many days, however many broadcasts follow.
MAX_DEFER_DAYS = 7


def broadcast_days(
    session: Session, settings: Settings, subscriber_id: int, timezone: str | None,
    start: date, end: date,
) -> set[date]:  # fmt: skip
    """Local days from `start` to `end` on which this subscriber gets (or got) a broadcast:
    from its delivery once written, else from a broadcast still to be fanned out whose
    segment includes them."""
    zone = zone_for(timezone, settings.timezone)
    since = datetime.combine(start, datetime.min.time(), zone) - timedelta(days=MAX_DEFER_DAYS)
    days: set[date] = set()
    written = session.execute(
        select(Delivery.sent_at, Delivery.next_attempt_at, Delivery.created_at).where(
            Delivery.subscriber_id == subscriber_id, Delivery.broadcast_id.is_not(None),
            Delivery.is_test.is_(False), Delivery.status.not_in(NOT_GOING),
            or_(Delivery.sent_at >= since, Delivery.next_attempt_at >= since,
                Delivery.created_at >= since),
        )
    )  # fmt: skip
    for row in written:
        days.add((row.sent_at or row.next_attempt_at or row.created_at).astimezone(zone).date())
    to_write = session.scalars(
        select(Broadcast).where(
            or_(Broadcast.state == BroadcastState.SCHEDULED,
                and_(Broadcast.state == BroadcastState.SENDING, Broadcast.fanned_out_at.is_(None),
                     Broadcast.checkpoint < subscriber_id))
        )
    )  # fmt: skip
    for broadcast in to_write:
        day = due_at(broadcast, timezone, settings.timezone).astimezone(zone).date()
        if start <= day <= end and day not in days:
            member = select(Subscriber.id).where(
                Subscriber.id == subscriber_id,
                audience_clause(settings, broadcast.segment, topic=issue_topic(broadcast)),
            )
            if session.scalar(member) is not None:
                days.add(day)
    return {day for day in days if start <= day <= end}


def defer_for_broadcasts(
    session: Session, settings: Settings, subscriber_id: int, timezone: str | None,
    due: datetime,
) -> datetime:  # fmt: skip
    """When a sequence step due at `due` should go: `due` itself, or the same wall-clock
    time on the first following day without a broadcast for this subscriber."""
    zone = zone_for(timezone, settings.timezone)
    local = due.astimezone(zone)
    last = local.date() + timedelta(days=MAX_DEFER_DAYS)
    days = broadcast_days(session, settings, subscriber_id, timezone, local.date(), last)
    shift = 0
    while shift < MAX_DEFER_DAYS and local.date() + timedelta(days=shift) in days:
        shift += 1
    # wall-clock arithmetic: 09:00 stays 09:00 across a daylight-saving change
    return (local + timedelta(days=shift)).astimezone(due.tzinfo)


def broadcasts_near(session: Session, now: datetime) -> bool:
    """Whether any broadcast could matter for a step due now: one still to go out, or one
    written in the last MAX_DEFER_DAYS. Without one, the scheduler skips the rule."""
    since = now - timedelta(days=MAX_DEFER_DAYS + 1)
    pending = select(Broadcast.id).where(
        Broadcast.state.in_([BroadcastState.SCHEDULED, BroadcastState.SENDING])
    )
    recent = select(Delivery.id).where(
        Delivery.broadcast_id.is_not(None), Delivery.created_at >= since
    )
    return session.scalar(pending.limit(1)) is not None or (
        session.scalar(recent.limit(1)) is not None
    )
