"""`nurture stats --experiment NAME`: each variant's emails, opens, clicks and
conversions (counted as `journeys/results.py` says), and how far apart the variants
are, with a confidence interval.

The interval is the usual 95% one for a difference of two proportions (Wald, normal
approximation): (p2 - p1) ± 1.96 · sqrt(p1(1 - p1)/n1 + p2(1 - p2)/n2), kept within
the possible -100 to +100 points. The approximation is only fair when each side has at
least `MIN_TRIALS` emails (or people) with at least `MIN_SUCCESSES` successes and as many
failures; below that the report gives no verdict ("too few to tell"). An interval that
holds 0 shows no clear difference yet.

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

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from nurture.content.experiments import HOLDOUT, Goal
from nurture.content.sequences import catalog_for
from nurture.journeys.experiments import Experiment, find, goal_of
from nurture.journeys.results import METRICS, ArmStats, arm_stats, in_time
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, DeliveryKind, DeliveryStatus, Event

#: The normal quantile of a two-sided 95% interval.
Z95 = 1.959964
#: Fewest trials per side, and fewest successes (and failures) per side, for a verdict:
#: the usual rule of thumb for the normal approximation (n ≥ 30, n·p ≥ 5, n·(1 − p) ≥ 5).
MIN_TRIALS = 30
MIN_SUCCESSES = 5


@dataclass(frozen=True)
class Difference:
    """`variant` minus `versus`, as a difference of rates with its 95% interval."""

    metric: str
    variant: str
    versus: str
    diff: float
    low: float
    high: float
    #: Whether both sides have enough trials and successes for the interval to mean much.
    enough: bool

    @property
    def clear(self) -> bool:
        """A verdict: enough data and an interval that leaves out 0."""
        return self.enough and (self.low > 0 or self.high < 0)


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
    """b's rate minus a's, each (name, successes, trials), with its 95% Wald interval
    clamped to the possible [-1, 1]; None when either side has no trials."""
    (name_a, x1, n1), (name_b, x2, n2) = a, b
    if not n1 or not n2:
        return None
    p1, p2 = x1 / n1, x2 / n2
    half = Z95 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    enough = all(n >= MIN_TRIALS and MIN_SUCCESSES <= x <= n - MIN_SUCCESSES
                 for x, n in ((x1, n1), (x2, n2)))  # fmt: skip
    return Difference(metric, name_b, name_a, p2 - p1, max(-1.0, p2 - p1 - half),
                      min(1.0, p2 - p1 + half), enough)  # fmt: skip


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
        arms, after_end = arm_stats(session, exp, goal)
    return Report(exp, goal, arms, _against_first(arms), after_end, lift)


def _against_first(arms: list[ArmStats]) -> list[Difference]:
    """Each later variant against the first listed, metric by metric."""
    control, found = arms[0], []
    for arm in arms[1:]:
        for metric in METRICS:
            x1, x2 = control.count(metric), arm.count(metric)
            if x1 is None or x2 is None:  # conversions without a goal
                continue
            d = difference(metric, (control.name, x1, control.sent), (arm.name, x2, arm.sent))
            if d is not None:
                found.append(d)
    return found


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
    goal_events: dict[int, list[datetime]] = defaultdict(list)
    for sid, at in session.execute(
        select(Event.subscriber_id, Event.at).where(Event.kind == goal.event,
                                                    Event.subscriber_id.in_(people))
    ):  # fmt: skip
        goal_events[sid].append(at)

    def converted(group: Mapping[int, datetime | None]) -> int:
        return sum(any(in_time(goal, start, at) for at in goal_events.get(sid, ()))
                   for sid, start in group.items())  # fmt: skip

    h, m = converted(held), converted(mailed)
    diff = difference("converted", (HOLDOUT, h, len(held)), ("mailed", m, len(mailed)))
    return Lift(len(held), h, len(mailed), m, diff)
