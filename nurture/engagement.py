"""What a subscriber did, as facts that gates, goals and readiness are decided on.

Scores are derived from the events table each time (a few indexed rows per person),
so changing `points:` in a sequence re-scores everyone without a migration.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.models import Delivery, Event, Tag
from nurture.sequences import Condition, ExitWhen, Readiness, Sequence


@dataclass(frozen=True)
class Facts:
    tags: frozenset[str]
    events: frozenset[str]  # custom event names
    opened: frozenset[str]  # step ids of this sequence
    clicked: frozenset[str]
    counts: dict[str, int]  # "open", "click", "event:<name>" -> how many

    def score(self, readiness: Readiness | None) -> int:
        if readiness is None:
            return 0
        return sum(self.counts.get(kind, 0) * points for kind, points in readiness.points.items())

    def ready(self, readiness: Readiness | None) -> bool:
        return readiness is not None and self.score(readiness) >= readiness.ready_at


TRACKING_KINDS = ("open", "click")


#: One tracked or custom event: its kind, and the sequence and step of its delivery.
Activity = tuple[str, str | None, str | None]


def load_facts(session: Session, subscriber_id: int, seq: Sequence) -> Facts:
    tags = set(session.scalars(select(Tag.name).where(Tag.subscriber_id == subscriber_id)))
    rows = session.execute(
        select(Event.kind, Delivery.sequence, Delivery.step_id)
        .outerjoin(Delivery, Delivery.id == Event.delivery_id)
        .where(Event.subscriber_id == subscriber_id, Event.bot.is_(False))
    ).all()
    return facts_from(tags, [tuple(r) for r in rows], seq)  # type: ignore[misc]


def facts_from(tags: set[str], activity: list[Activity], seq: Sequence) -> Facts:
    """Facts from a subscriber's tags and non-bot activity, however they were read (one
    subscriber here, a whole batch by gates.Planner)."""
    counts: dict[str, int] = {}
    opened: set[str] = set()
    clicked: set[str] = set()
    events: set[str] = set()
    for kind, sequence, step_id in activity:
        if kind in TRACKING_KINDS:
            counts[kind] = counts.get(kind, 0) + 1
            if sequence == seq.name and step_id:
                (opened if kind == "open" else clicked).add(step_id)
                if kind == "click":
                    opened.add(step_id)  # a click proves the email was opened
        else:
            events.add(kind)
            counts[f"event:{kind}"] = counts.get(f"event:{kind}", 0) + 1
    return Facts(frozenset(tags), frozenset(events), frozenset(opened), frozenset(clicked), counts)


def check(cond: Condition, facts: Facts, readiness: Readiness | None) -> tuple[bool, str]:
    """Whether every key of the condition holds; if not, what is missing, in words."""
    score = facts.score(readiness)
    target = readiness.ready_at if readiness else "-"
    missing = [
        text
        for ok, text in (
            (cond.ready is None or facts.ready(readiness) == cond.ready,
             f"needs {'' if cond.ready else 'not '}ready, score {score} of {target}"),
            (cond.score_at_least is None or score >= cond.score_at_least,
             f"needs score {cond.score_at_least}, has {score}"),
            (cond.tag is None or cond.tag in facts.tags, f"needs tag {cond.tag}"),
            (cond.not_tag is None or cond.not_tag not in facts.tags, f"has tag {cond.not_tag}"),
            (cond.event is None or cond.event in facts.events, f"needs event {cond.event}"),
            (cond.clicked is None or cond.clicked in facts.clicked,
             f"needs a click in {cond.clicked}"),
            (cond.opened is None or cond.opened in facts.opened,
             f"needs an open of {cond.opened}"),
        )
        if not ok
    ]  # fmt: skip
    return not missing, "; ".join(missing)


def goal_reached(goal: ExitWhen | None, facts: Facts) -> str | None:
    """The reason the sequence's goal is reached, if it is."""
    if goal is None:
        return None
    for event in goal.event:
        if event in facts.events:
            return f"goal reached: event {event}"
    for tag in goal.tag:
        if tag in facts.tags:
            return f"goal reached: tag {tag}"
    return None
