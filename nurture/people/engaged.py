"""Engagement as SQL: who opened or clicked since when, who went silent, who opened
which step. Segments (`opened:30d`, `inactive:120d`, `step:welcome:clicked`) and the
sunset policy ask the same questions, so they share these clauses.

Opens and clicks flagged `bot` (scanners, image prefetchers: nurture.delivery.links)
never count, and a click counts as an open: it proves the email was read even when
its images were blocked (as in nurture.people.engagement).
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select

from nurture.content.sequences import Catalog
from nurture.people.engagement import TRACKING_KINDS
from nurture.store.tables import Delivery, DeliveryStatus, Event, Subscriber

#: What a `step:` term can ask of an email, and the events that prove it.
STEP_ACTIONS: dict[str, tuple[str, ...]] = {"sent": (), "opened": TRACKING_KINDS,
                                            "clicked": ("click",)}  # fmt: skip


def latest(subscriber_id: Any, kinds: tuple[str, ...] = TRACKING_KINDS) -> Any:
    """A person's latest open or click (not a bot's), NULL for none, to show."""
    return (
        select(func.max(Event.at))
        .where(Event.subscriber_id == subscriber_id, Event.kind.in_(kinds),
               Event.bot.is_(False))
        .scalar_subquery()
    )  # fmt: skip


def engaged(subscriber_id: Any, since: Any, kinds: tuple[str, ...] = TRACKING_KINDS
            ) -> ColumnElement[bool]:  # fmt: skip
    """A person's open or click (not a bot's) at or after `since`: a time, or a column
    of the row being tested (a sunset round's start). True or false, never NULL.

    A correlated scalar subquery, not EXISTS: one probe of ix_events_engagement a row,
    whatever the planner believes of the tables. PostgreSQL makes an EXISTS a join, and
    on rows written a moment ago, before any statistics, chose nested loops that
    compared 17 million pairs for 4,000 people."""
    first = select(Event.id).where(
        Event.subscriber_id == subscriber_id, Event.kind.in_(kinds), Event.at >= since,
        Event.bot.is_(False),
    )  # fmt: skip
    return first.limit(1).scalar_subquery().is_not(None)


def joined_at() -> ColumnElement[datetime]:
    """When a subscriber started to receive email: confirmed, else added."""
    return func.coalesce(Subscriber.confirmed_at, Subscriber.created_at)


def inactive(cutoff: datetime) -> ColumnElement[bool]:
    """No open and no click since `cutoff`, and subscribed before it: silence counts from
    the last engagement, or from joining for who never engaged, so nobody new is
    inactive on their first day."""
    return and_(joined_at() <= cutoff, not_(engaged(Subscriber.id, cutoff)))


class UnknownStep(LookupError):
    """A `step:` term naming a sequence, step or action that does not exist."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


def _did_you_mean(name: str, known: list[str], what: str) -> UnknownStep:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "known: " + (", ".join(known) or "none")
    return UnknownStep(f"no {what} {name!r}", hint)


def resolve_step(catalog: Catalog, value: str) -> tuple[list[tuple[str, str]], str]:
    """`STEP:ACTION` (that step id in any sequence) or `SEQUENCE:STEP:ACTION` as the
    (sequence, step) pairs it names and the action; UnknownStep for a wrong name."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise UnknownStep(f"{value!r} is not STEP:ACTION",
                          "like step:welcome:clicked or step:SEQUENCE:welcome:opened")  # fmt: skip
    *named, step_id, action = parts
    if action not in STEP_ACTIONS:
        raise _did_you_mean(action, list(STEP_ACTIONS), "action")
    sequences = list(catalog.sequences.values())
    if named:
        seq = catalog.get(named[0])
        if seq is None:
            raise _did_you_mean(named[0], sorted(catalog.sequences), "sequence")
        sequences = [seq]
    pairs = [(s.name, step.id) for s in sequences for step in s.steps if step.id == step_id]
    if not pairs:
        ids = sorted({step.id for s in sequences for step in s.steps})
        raise _did_you_mean(step_id, ids, "step")
    return pairs, action


def step_engaged(pairs: list[tuple[str, str]], action: str) -> ColumnElement[bool]:
    """Was sent, opened or clicked (`action`) the email of one of these steps."""
    of_step = or_(*(and_(Delivery.sequence == q, Delivery.step_id == s) for q, s in pairs))
    if action == "sent":
        return exists(select(Delivery.id).where(Delivery.subscriber_id == Subscriber.id,
                                                Delivery.status == DeliveryStatus.SENT,
                                                of_step))  # fmt: skip
    return exists(
        select(Event.id)
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(Event.subscriber_id == Subscriber.id, Event.bot.is_(False),
               Event.kind.in_(STEP_ACTIONS[action]), of_step)
    )  # fmt: skip
