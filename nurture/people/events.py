"""What subscribers do, kept as events: opens, clicks, unsubscribes and business events
such as `demo_booked`, each one letting goals, readiness and gates react at once.

The signed links that lead here are `nurture.delivery.links`; this module only stores
what they report, so the web's tracking and API views and `nurture events add` each
call one function that opens its own transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.errors import SubscriberError
from nurture.people.activity import on_activity
from nurture.people.subscribers import get as get_subscriber
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event

#: Event names the tracking endpoints write; `POST /api/events` may not forge them.
RESERVED = frozenset({"open", "click", "unsubscribe", "bounced", "complained", "preferences"})
#: At most one open and one click event is kept per email per this long.
TRACK_EVERY = timedelta(minutes=1)
#: A custom event name: short, lower case, no spaces (`demo_booked`, `pricing:viewed`).
EVENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


@dataclass(frozen=True)
class Recorded:
    """A stored custom event, as its callers report it."""

    id: int
    name: str


def record(
    session: Session, subscriber_id: int, kind: str, now: datetime, *,
    delivery_id: int | None = None, bot: bool = False, data: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> Event:  # fmt: skip
    """Store an event; with `settings`, let goals, readiness and gates react to it at once
    (a bot's event is kept but changes nothing)."""
    event = Event(subscriber_id=subscriber_id, delivery_id=delivery_id, kind=kind, at=now,
                  bot=bot, data=data or {})  # fmt: skip
    session.add(event)
    session.flush()
    if settings is not None and not bot and kind != "unsubscribe":
        on_activity(session, settings, subscriber_id, now)
    return event


def record_for_delivery(
    session: Session, delivery_id: int, kind: str, now: datetime, *, bot: bool,
    data: dict[str, Any] | None = None, settings: Settings | None = None,
) -> Event | None:  # fmt: skip
    """An open or click of one email; None when the email is gone (its subscriber
    forgotten), or when the same email had the same kind of event (from a bot, or not)
    less than TRACK_EVERY ago: one email cannot add rows without end, and the first
    open and each minute's clicks are all that opens and clicks are read for."""
    # The delivery's row is locked (PostgreSQL) so two requests at once count once.
    subscriber_id = session.scalar(
        select(Delivery.subscriber_id).where(Delivery.id == delivery_id).with_for_update()
    )
    if subscriber_id is None:
        return None
    recent = select(Event.id).where(
        Event.delivery_id == delivery_id, Event.kind == kind, Event.bot == bot,
        Event.at > now - TRACK_EVERY,
    ).limit(1)  # fmt: skip
    if session.scalar(recent) is not None:
        return None
    return record(session, subscriber_id, kind, now, delivery_id=delivery_id, bot=bot, data=data,
                  settings=settings)  # fmt: skip


def check_event_name(name: str) -> str:
    name = (name or "").strip()
    if not EVENT_NAME.match(name):
        raise SubscriberError(
            f"{name!r} is not an event name: use up to 64 lower-case letters, digits, "
            "'_', '-', '.' or ':' (like demo_booked)"
        )
    if name in RESERVED:
        raise SubscriberError(f"{name!r} is recorded by nurture itself; pick another name")
    return name


def record_custom(
    session: Session, address: str, name: str, now: datetime, data: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> Event:  # fmt: skip
    """A business event such as `demo_booked`, for goals and conditions to use."""
    name = check_event_name(name)
    sub_id = get_subscriber(session, address).id
    return record(session, sub_id, name, now, data=data, settings=settings)


def last_sent_delivery(session: Session, subscriber_id: int, sequence: str | None) -> int | None:
    """The email someone most likely acted on: their latest sent one (of this sequence)."""
    query = select(Delivery.id).where(
        Delivery.subscriber_id == subscriber_id, Delivery.sent_at.is_not(None)
    )
    if sequence is not None:
        query = query.where(Delivery.sequence == sequence)
    return session.scalar(query.order_by(Delivery.sent_at.desc(), Delivery.id.desc()).limit(1))


def add_event(
    settings: Settings, address: str, name: str, now: datetime,
    data: dict[str, Any] | None = None,
) -> Recorded:  # fmt: skip
    """`record_custom` in a transaction of its own; SubscriberError for a bad name or an
    unknown address."""
    with session_scope(settings) as session:
        event = record_custom(session, address, name, now, data, settings=settings)
        return Recorded(event.id, event.kind)


def track(
    settings: Settings, delivery_id: int, kind: str, now: datetime, *, bot: bool,
    data: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Record an open or a click of one email, unless tracking is off (NURTURE_TRACKING)."""
    if not settings.tracking:
        return
    with session_scope(settings) as session:
        record_for_delivery(session, delivery_id, kind, now, bot=bot, data=data,
                            settings=settings)  # fmt: skip
