"""Read-only reports: what each step did."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, Sequence, Stage
from nurture.people.engagement import live_scores
from nurture.store.tables import (
    UNSETTLED,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Event,
    Handoff,
    Subscriber,
    Sunset,
    SunsetOutcome,
)


@dataclass(frozen=True)
class StepStats:
    sequence: str
    step_id: str
    stage: str
    counts: dict[str, int]


COLUMNS = ("sent", "pending", "failed", "skipped", "cancelled", "opened", "clicked",
           "unsubscribed", "bounced")  # fmt: skip


def step_stats(session: Session, catalog: Catalog, sequence: str | None = None) -> list[StepStats]:
    query = (
        select(Delivery.sequence, Delivery.step_id, Delivery.status, func.count())
        .where(Delivery.kind == DeliveryKind.SEQUENCE)
        .group_by(Delivery.sequence, Delivery.step_id, Delivery.status)
    )
    if sequence:
        query = query.where(Delivery.sequence == sequence)
    found: dict[tuple[str, str], dict[str, int]] = {}
    for seq_name, step_id, status, count in session.execute(query):
        column = "pending" if status in UNSETTLED else str(status)
        bucket = found.setdefault(_step_key(seq_name, step_id), dict.fromkeys(COLUMNS, 0))
        bucket[column] = bucket.get(column, 0) + count
    _add_engagement(session, found, sequence)
    rows = []
    names = [sequence] if sequence else sorted(catalog.sequences)
    for name in names:
        seq = catalog.get(name)
        for step in seq.steps if seq else ():
            counts = found.pop((name, step.id), dict.fromkeys(COLUMNS, 0))
            rows.append(StepStats(name, step.id, str(step.stage), counts))
    for (name, step_id), counts in sorted(found.items()):  # steps since removed from files
        rows.append(StepStats(name, step_id, "(removed)", counts))
    return rows


def _step_key(sequence: str | None, step_id: str | None) -> tuple[str, str]:
    """A sequence email's (sequence, step): both columns are only empty on other kinds of
    email, which every query here leaves out (`kind == "sequence"`)."""
    return cast("tuple[str, str]", (sequence, step_id))


def _add_engagement(
    session: Session, found: dict[tuple[str, str], dict[str, int]], sequence: str | None
) -> None:
    """Emails (not events) opened, clicked, left from or bounced, per step; bots left out.
    An email opened five times counts once; a person who went through the sequence twice
    (`reentry: true`) counts once per email, as `sent` does. A bounce is an email with a
    `bounced` event, as in `reports/deliverability.py`: refused at once by the SMTP
    server, or reported later by a bounce message or a provider's webhook."""
    # a click proves the email was opened, even when its pixel was blocked
    kind = case((Event.kind == "click", "click"), (Event.kind == "unsubscribe", "unsubscribe"),
                (Event.kind == "bounced", "bounced"), else_="open")  # fmt: skip
    emails = func.count(func.distinct(Event.delivery_id))
    base = (
        select(Delivery.sequence, Delivery.step_id)
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(Delivery.kind == DeliveryKind.SEQUENCE, Event.bot.is_(False))
        .group_by(Delivery.sequence, Delivery.step_id)
    )
    if sequence:
        base = base.where(Delivery.sequence == sequence)
    opened = base.add_columns(literal("open"), emails).where(Event.kind.in_(["open", "click"]))
    events = (
        base.add_columns(kind, emails)
        .where(Event.kind.in_(["click", "unsubscribe", "bounced"]))
        .group_by(kind)
        .union_all(opened)
    )
    column = {"open": "opened", "click": "clicked", "unsubscribe": "unsubscribed",
              "bounced": "bounced"}  # fmt: skip
    for seq_name, step_id, kind, count in session.execute(events):
        bucket = found.setdefault(_step_key(seq_name, step_id), dict.fromkeys(COLUMNS, 0))
        bucket[column[kind]] = count


@dataclass(frozen=True)
class Funnel:
    """One sequence, stage by stage: how many people made it how far."""

    sequence: str
    entered: int
    education_finished: int
    ready: int
    sales_sent: int
    goal: int

    def stages(self) -> list[tuple[str, int]]:
        return [("entered", self.entered), ("finished education", self.education_finished),
                ("became sales-ready", self.ready), ("got sales prompts", self.sales_sent),
                ("reached the goal", self.goal)]  # fmt: skip


def funnel(session: Session, seq: Sequence) -> Funnel:
    sales_steps = [s.id for s in seq.steps if s.stage == Stage.SALES]
    education_steps = [s.id for s in seq.steps if s.stage == Stage.EDUCATION]
    last_education = education_steps[-1] if education_steps else None
    mine = Enrollment.sequence == seq.name
    # people, not enrolments: a second round (`reentry: true`) is not a second person
    people = func.count(func.distinct(Enrollment.subscriber_id))
    entered = session.scalar(select(people).where(mine)) or 0
    past_education = select(func.count(func.distinct(Delivery.subscriber_id))).where(
        Delivery.sequence == seq.name,
        Delivery.status.in_([DeliveryStatus.SENT, DeliveryStatus.SKIPPED]),
        Delivery.step_id.in_(sales_steps + ([last_education] if last_education else [])),
    )
    ready = (
        select(people)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(mine, Subscriber.ready_at.is_not(None))
    )
    sales_sent = select(func.count(func.distinct(Delivery.subscriber_id))).where(
        Delivery.sequence == seq.name, Delivery.status == DeliveryStatus.SENT,
        Delivery.step_id.in_(sales_steps),
    )  # fmt: skip
    goal = select(people).where(mine, Enrollment.end_reason.like("goal reached%"))
    return Funnel(seq.name, entered, session.scalar(past_education) or 0,
                  session.scalar(ready) or 0, session.scalar(sales_sent) or 0,
                  session.scalar(goal) or 0)  # fmt: skip


@dataclass(frozen=True)
class Scores:
    """Live readiness scores of the people going through a sequence now."""

    sequence: str
    people: int
    median: int
    ready_at: int
    at_or_above: int

    def line(self) -> str:
        return (f"{self.sequence} scores now: {self.people} in it, median {self.median}, "
                f"{self.at_or_above} at or above {self.ready_at} (ready)")  # fmt: skip


def scores(session: Session, seq: Sequence) -> Scores | None:
    """The scores, from events (`engagement.live_scores`), of those still in `seq`;
    None for a sequence without `readiness:`."""
    if seq.readiness is None:
        return None
    ids = list(session.scalars(
        select(Enrollment.subscriber_id).distinct()
        .where(Enrollment.sequence == seq.name, Enrollment.status == EnrollmentStatus.ACTIVE)
    ))  # fmt: skip
    values = sorted(live_scores(session, ids, [seq]).values())
    return Scores(seq.name, len(values), values[len(values) // 2] if values else 0,
                  seq.readiness.ready_at, sum(v >= seq.readiness.ready_at for v in values))  # fmt: skip


#: The sunset outcomes as `stats` says them, in order.
SUNSET_WORDS = {SunsetOutcome.WINBACK: "in the win-back now", SunsetOutcome.WON_BACK: "won back",
                SunsetOutcome.UNSUBSCRIBED: "unsubscribed as inactive",
                SunsetOutcome.STOPPED: "getting no newsletters",
                SunsetOutcome.LEFT: "left during the win-back"}  # fmt: skip


def sunset_counts(session: Session) -> dict[str, int]:
    """People by where their sunset round stands ("won back": 3, …), every outcome;
    empty when the policy never found anyone inactive."""
    rows = dict(session.execute(
        select(Sunset.outcome, func.count(func.distinct(Sunset.subscriber_id)))
        .group_by(Sunset.outcome)
    ).all())  # fmt: skip
    return {words: rows.get(outcome, 0) for outcome, words in SUNSET_WORDS.items()} if rows else {}


def handoff_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Handoff.status, func.count()).group_by(Handoff.status))
    return {str(status): count for status, count in rows}


@dataclass(frozen=True)
class DeliveryHealth:
    """Where the queue stands: what waits, what is on the wire, what went wrong in transit."""

    queued: int
    sending: int
    retry: int
    #: `sending` for longer than resend_after: its worker was lost; send-due takes it back.
    stuck: int
    #: Ever taken back from a lost worker before it was handed to SMTP: sent once.
    taken_back_unsent: int
    #: Taken back after it was handed to SMTP, and sent again: possibly a duplicate.
    maybe_twice: int

    def line(self) -> str:
        return (f"deliveries: {self.queued} queued, {self.sending} sending, {self.retry} to retry, "
                f"{self.stuck} stuck, {self.taken_back_unsent} taken back unsent, "
                f"{self.maybe_twice} maybe sent twice")  # fmt: skip


def delivery_health(session: Session, now: datetime, resend_after: timedelta) -> DeliveryHealth:
    by_status = dict(
        session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
    )
    stuck = session.scalar(
        select(func.count()).where(
            Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_at < now - resend_after
        )
    )
    taken_back = dict(
        session.execute(
            select(Delivery.maybe_twice, func.count())
            .where(Delivery.recovered_at.is_not(None))
            .group_by(Delivery.maybe_twice)
        ).all()
    )
    return DeliveryHealth(
        queued=by_status.get(DeliveryStatus.QUEUED, 0),
        sending=by_status.get(DeliveryStatus.SENDING, 0),
        retry=by_status.get(DeliveryStatus.RETRY, 0),
        stuck=stuck or 0,
        taken_back_unsent=taken_back.get(False, 0),
        maybe_twice=taken_back.get(True, 0),
    )
