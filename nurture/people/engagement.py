"""What a subscriber did, as facts that gates, goals and readiness are decided on.

Scores are derived from the events table each time (a few indexed rows per person),
so changing `points:` in a sequence re-scores everyone without a migration. Opens and
clicks count once per email: a reader who opens one email five times (or a mail
client that reloads its pixel) has engaged with one email, not five. Every event is
still recorded; only the score, gates and reports count them per delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, Condition, ExitWhen, Readiness, Sequence
from nurture.store.tables import Delivery, Event, Tag


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


#: One tracked or custom event: its kind, the sequence and step of its delivery, the
#: delivery's id and its enrolment's id (None for a custom event).
Activity = tuple[str, str | None, str | None, int | None, int | None]


#: What `activity_query` selects: the subscriber's id, then an `Activity`.
ActivityRow = Select[int, str, str | None, str | None, int | None, int | None]


def activity_query(subscriber_ids: ColumnElement[bool]) -> ActivityRow:
    """Non-bot events of the matching subscribers, as (subscriber id, *Activity)."""
    return (
        select(Event.subscriber_id, Event.kind, Delivery.sequence, Delivery.step_id,
               Event.delivery_id, Delivery.enrollment_id)
        .outerjoin(Delivery, Delivery.id == Event.delivery_id)
        .where(subscriber_ids, Event.bot.is_(False))
    )  # fmt: skip


def load_activity(session: Session, subscriber_id: int) -> tuple[set[str], list[Activity]]:
    """One subscriber's tags and non-bot activity."""
    tags = set(session.scalars(select(Tag.name).where(Tag.subscriber_id == subscriber_id)))
    rows = session.execute(activity_query(Event.subscriber_id == subscriber_id)).all()
    return tags, [(r[1], r[2], r[3], r[4], r[5]) for r in rows]


def load_facts(
    session: Session, subscriber_id: int, seq: Sequence, enrollment_id: int | None = None
) -> Facts:
    tags, activity = load_activity(session, subscriber_id)
    return facts_from(tags, activity, seq, enrollment_id)


def live_score(session: Session, subscriber_id: int, catalog: Catalog) -> int:
    """The score a subscriber has now, from their events: the highest under any
    sequence's `readiness:` (0 when no sequence scores): what `subscribers show` prints;
    `leads` and `stats` use `live_scores` for many people at once."""
    return live_scores(session, [subscriber_id], list(catalog.sequences.values())).get(
        subscriber_id, 0
    )


#: Subscribers whose events are read in one query by `live_scores`.
SCORE_BATCH = 1000


def live_scores(session: Session, ids: list[int], sequences: list[Sequence]) -> dict[int, int]:
    """Each subscriber's score now under the highest-scoring of `sequences` (their
    events read a batch at a time, counted by `facts_from`'s once-per-email rule)."""
    scoring = [s for s in sequences if s.readiness is not None]
    scores = dict.fromkeys(ids, 0)
    if not scoring:
        return scores
    for start in range(0, len(ids), SCORE_BATCH):
        batch = ids[start : start + SCORE_BATCH]
        activity: dict[int, list[Activity]] = {}
        for sid, *row in session.execute(activity_query(Event.subscriber_id.in_(batch))):
            activity.setdefault(sid, []).append(tuple(row))  # type: ignore[arg-type]
        for sid, rows in activity.items():
            facts = facts_from(set(), rows, scoring[0])
            scores[sid] = max(facts.score(s.readiness) for s in scoring)
    return scores


def facts_from(
    tags: set[str], activity: list[Activity], seq: Sequence, enrollment_id: int | None = None
) -> Facts:
    """Facts from a subscriber's tags and non-bot activity, however they were read (one
    subscriber here, a whole batch by gates.Planner). With `enrollment_id`, `opened` and
    `clicked` name only the steps of that round (`reentry: true`): a gate on a click in
    the second round wants a click on the second round's email. The score counts all."""
    counts: dict[str, int] = {}
    opened: set[str] = set()
    clicked: set[str] = set()
    events: set[str] = set()
    seen: set[tuple[str, int]] = set()  # (open|click, delivery id) already counted
    for kind, sequence, step_id, delivery_id, round_id in activity:
        if kind in TRACKING_KINDS:
            if delivery_id is not None:
                if (kind, delivery_id) in seen:
                    continue  # the same email opened or clicked again: no more points
                seen.add((kind, delivery_id))
            counts[kind] = counts.get(kind, 0) + 1
            this_round = enrollment_id is None or round_id == enrollment_id
            if sequence == seq.name and step_id and this_round:
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
             f"needs ready, score {score} of {target}" if cond.ready
             else f"already sales-ready: score {score}, ready at {target}"),
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
