"""`nurture stats --experiment NAME`: each variant's emails, opens, clicks and
conversions, and how far apart the variants are, with a confidence interval.

Counted per email, as the rest of `stats` counts: an email opened five times is one
open, and bots' opens and clicks (`events.bot`) are left out; a click proves an open
even when the pixel was blocked. A conversion is an email followed by the experiment's
goal event (`goal: {event: …, within: …}`) from the same subscriber, after it was sent
and within the goal's time when it has one. Only the emails assigned while the
experiment ran are compared: those sent with the kept variant after it ended were not
drawn at random and are counted apart (`after_end`).

The interval is the usual 95% one for a difference of two proportions (Wald, normal
approximation): (p2 - p1) ± 1.96 · sqrt(p1(1 - p1)/n1 + p2(1 - p2)/n2). It is rough
for small counts and rates near 0 or 1; an interval that holds 0 shows no clear
difference yet.

A sequence's holdout is compared per person: those held out against those who got at
least one of its emails, each from their first email (or first skipped one); the
difference of their conversion rates is the sequence's lift.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from nurture.content.experiments import HOLDOUT, Goal
from nurture.content.sequences import catalog_for
from nurture.journeys.experiments import Experiment, find, goal_of
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, DeliveryKind, DeliveryStatus, Event

#: The normal quantile of a two-sided 95% interval.
Z95 = 1.959964
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


@dataclass(frozen=True)
class Difference:
    """`variant` minus `versus`, as a difference of rates with its 95% interval."""

    metric: str
    variant: str
    versus: str
    diff: float
    low: float
    high: float

    @property
    def clear(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Lift:
    """A sequence's holdout against the people it mailed (per person)."""

    held: int
    held_converted: int
    mailed: int
    mailed_converted: int
    difference: Difference | None


@dataclass(frozen=True)
class Report:
    experiment: Experiment
    goal: Goal | None
    arms: list[ArmStats]
    differences: list[Difference]
    #: Emails sent the kept variant since the experiment ended (not compared).
    after_end: int
    #: The holdout of the sequence the experiment is in (or is), if it has one.
    lift: Lift | None


def difference(metric: str, a: tuple[str, int, int], b: tuple[str, int, int]) -> Difference | None:
    """b's rate minus a's, each (name, successes, trials), with its 95% Wald interval;
    None when either side has no trials."""
    (name_a, x1, n1), (name_b, x2, n2) = a, b
    if not n1 or not n2:
        return None
    p1, p2 = x1 / n1, x2 / n2
    half = Z95 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return Difference(metric, name_b, name_a, p2 - p1, p2 - p1 - half, p2 - p1 + half)


def report(settings: Settings, name: str) -> Report:
    """The report of experiment `name`; ExperimentError when there is none."""
    catalog = catalog_for(settings.sequences_dir)
    with session_scope(settings) as session:
        exp = find(session, catalog, name)
        seq = catalog.get(exp.sequence) if exp.sequence else None
        goal = goal_of(seq) if seq is not None else exp.goal
        lift = _lift(session, exp.sequence, goal) if seq is not None and seq.holdout else None
        if exp.kind == "holdout":
            return Report(exp, goal, [], [], 0, lift)
        arms, after_end = _arms(session, exp, goal)
    control = arms[0]
    diffs = [d for arm in arms[1:] for metric in METRICS
             if (control.count(metric) is not None)
             and (d := difference(metric, (control.name, control.count(metric) or 0, control.sent),
                                  (arm.name, arm.count(metric) or 0, arm.sent))) is not None]  # fmt: skip
    return Report(exp, goal, arms, diffs, after_end, lift)


def _scope(exp: Experiment) -> ColumnElement[bool]:
    """The experiment's emails (sent or not), test copies left out."""
    if exp.broadcast_id is not None:
        return and_(Delivery.broadcast_id == exp.broadcast_id, Delivery.is_test.is_(False))
    return and_(Delivery.kind == DeliveryKind.SEQUENCE, Delivery.sequence == exp.sequence,
                Delivery.step_id == exp.step)  # fmt: skip


def _arms(session: Session, exp: Experiment, goal: Goal | None) -> tuple[list[ArmStats], int]:
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
        if _in_time(goal, sent_at, at):
            done[variant].add(delivery_id)
    return {str(variant): len(ids) for variant, ids in done.items()}


def _in_time(goal: Goal, start: datetime | None, at: datetime) -> bool:
    return start is not None and at >= start and (goal.within is None or at <= start + goal.within)


def _lift(session: Session, sequence: str | None, goal: Goal | None) -> Lift:
    """The holdout's people against the mailed ones, from their first (skipped) email."""
    mine = and_(Delivery.kind == DeliveryKind.SEQUENCE, Delivery.sequence == sequence)
    held = dict(session.execute(
        select(Delivery.subscriber_id, func.min(Delivery.created_at))
        .where(mine, Delivery.variant == HOLDOUT).group_by(Delivery.subscriber_id)
    ).all())  # fmt: skip
    mailed = dict(session.execute(
        select(Delivery.subscriber_id, func.min(Delivery.sent_at))
        .where(mine, Delivery.status == DeliveryStatus.SENT).group_by(Delivery.subscriber_id)
    ).all())  # fmt: skip
    mailed = {sid: at for sid, at in mailed.items() if sid not in held}  # a share made smaller
    if goal is None:
        return Lift(len(held), 0, len(mailed), 0, None)
    people = select(Delivery.subscriber_id).where(mine)
    firsts: dict[int, list[datetime]] = defaultdict(list)
    for sid, at in session.execute(
        select(Event.subscriber_id, Event.at).where(Event.kind == goal.event,
                                                    Event.subscriber_id.in_(people))
    ):  # fmt: skip
        firsts[sid].append(at)

    def converted(group: Mapping[int, datetime | None]) -> int:
        return sum(any(_in_time(goal, start, at) for at in firsts.get(sid, ()))
                   for sid, start in group.items())  # fmt: skip

    h, m = converted(held), converted(mailed)
    diff = difference("converted", (HOLDOUT, h, len(held)), ("mailed", m, len(mailed)))
    return Lift(len(held), h, len(mailed), m, diff)
