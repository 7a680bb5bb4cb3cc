"""What each variant of an experiment did: its emails sent, opened, clicked and
followed by the goal event.

Counted per email, as the rest of `stats` counts: an email opened five times is one
open, and bots' opens and clicks (`events.bot`) are left out; a click proves an open
even when the pixel was blocked. A conversion is an email followed by the experiment's
goal event (`goal: {event: …, within: …}`) from the same subscriber, after it was sent
and within the goal's time when it has one. Only the emails assigned while the
experiment ran are counted: those sent with the kept variant after it ended were not
drawn at random and are counted apart. `stats --experiment` compares these numbers; a
broadcast's test share picks its winner by them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from nurture.content.experiments import Goal
from nurture.journeys.experiments import Experiment
from nurture.store.tables import Delivery, DeliveryKind, DeliveryStatus, Event

#: What an experiment compares, in the order shown.
METRICS = ("opened", "clicked", "converted")


@dataclass(frozen=True)
class ArmStats:
    name: str
    share: float  # of subscribers, by the weights
    sent: int
    opened: int
    clicked: int
    converted: int | None  # None: no goal to count

    def count(self, metric: str) -> int | None:
        return getattr(self, metric)  # type: ignore[no-any-return]


def _scope(exp: Experiment) -> ColumnElement[bool]:
    """The experiment's emails (sent or not), test copies left out."""
    if exp.broadcast_id is not None:
        return and_(Delivery.broadcast_id == exp.broadcast_id, Delivery.is_test.is_(False))
    return and_(Delivery.kind == DeliveryKind.SEQUENCE, Delivery.sequence == exp.sequence,
                Delivery.step_id == exp.step)  # fmt: skip


def arm_stats(session: Session, exp: Experiment, goal: Goal | None) -> tuple[list[ArmStats], int]:
    """Each variant's numbers over the emails assigned while the experiment ran, and how
    many were sent the kept variant since it ended."""
    sent = and_(_scope(exp), Delivery.status == DeliveryStatus.SENT,
                Delivery.variant.in_(exp.variants))  # fmt: skip
    compared = sent if exp.ended is None else and_(sent, Delivery.created_at < exp.ended.at)
    after_end = 0
    if exp.ended is not None:
        after_end = session.scalar(
            select(func.count()).where(sent, Delivery.created_at >= exp.ended.at)
        ) or 0  # fmt: skip
    emails = func.count(func.distinct(Delivery.id))
    by_variant = select(Delivery.variant, emails).where(compared).group_by(Delivery.variant)
    counts = {"sent": dict(session.execute(by_variant).all())}
    for metric, kinds in (("opened", ("open", "click")), ("clicked", ("click",))):
        engaged = by_variant.join(Event, Event.delivery_id == Delivery.id).where(
            Event.kind.in_(kinds), Event.bot.is_(False)
        )
        counts[metric] = dict(session.execute(engaged).all())
    converted = _conversions(session, compared, goal) if goal is not None else None
    arms = [ArmStats(name, share, counts["sent"].get(name, 0), counts["opened"].get(name, 0),
                     counts["clicked"].get(name, 0),
                     None if converted is None else converted.get(name, 0))
            for name, share in exp.arms]  # fmt: skip
    return arms, after_end


def _conversions(session: Session, emails: ColumnElement[bool], goal: Goal) -> dict[str, int]:
    """Emails followed by the goal event, per variant."""
    rows = session.execute(
        select(Delivery.id, Delivery.variant, Delivery.sent_at, Event.at)
        .join(Event, and_(Event.subscriber_id == Delivery.subscriber_id, Event.kind == goal.event))
        .where(emails, Event.at >= Delivery.sent_at)
    )  # fmt: skip
    done: dict[str | None, set[int]] = defaultdict(set)
    for delivery_id, variant, sent_at, at in rows:
        if in_time(goal, sent_at, at):
            done[variant].add(delivery_id)
    return {str(variant): len(ids) for variant, ids in done.items()}


def in_time(goal: Goal, start: datetime | None, at: datetime) -> bool:
    """Whether a goal event at `at` is a conversion of an email sent at `start`."""
    return start is not None and at >= start and (goal.within is None or at <= start + goal.within)
