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


def load_facts(session: Session, subscriber_id: int, seq: Sequence) -> Facts:
    tags = frozenset(session.scalars(select(Tag.name).where(Tag.subscriber_id == subscriber_id)))
    rows = session.execute(
        select(Event.kind, Delivery.sequence, Delivery.step_id)
        .outerjoin(Delivery, Delivery.id == Event.delivery_id)
        .where(Event.subscriber_id == subscriber_id, Event.bot.is_(False))
    ).all()
    counts: dict[str, int] = {}
    opened, clicked, events = set(), set(), set()
    for kind, sequence, step_id in rows:
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
    """Whether every key of the condition holds, and a short human reason."""
    failed: list[str] = []
    passed: list[str] = []

    def need(ok: bool, text: str) -> None:
        (passed if ok else failed).append(text)

    if cond.ready is not None:
        need(facts.ready(readiness) == cond.ready,
             f"ready={cond.ready} (score {facts.score(readiness)}"
             f"/{readiness.ready_at if readiness else '-'})")  # fmt: skip
    if cond.score_at_least is not None:
        need(facts.score(readiness) >= cond.score_at_least,
             f"score {facts.score(readiness)} >= {cond.score_at_least}")  # fmt: skip
    if cond.tag is not None:
        need(cond.tag in facts.tags, f"tag {cond.tag}")
    if cond.not_tag is not None:
        need(cond.not_tag not in facts.tags, f"no tag {cond.not_tag}")
    if cond.event is not None:
        need(cond.event in facts.events, f"event {cond.event}")
    if cond.clicked is not None:
        need(cond.clicked in facts.clicked, f"clicked {cond.clicked}")
    if cond.opened is not None:
        need(cond.opened in facts.opened, f"opened {cond.opened}")
    if failed:
        return False, "not yet: " + ", ".join(failed)
    return True, "met: " + ", ".join(passed)


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
