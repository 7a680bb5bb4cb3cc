"""React to what a subscriber just did (an open, a click, a custom event, a new tag).

Only this subscriber's active enrolments are looked at, so an event costs a few
indexed queries however large the list: goals end enrolments at once, readiness is
re-scored (and the first time it is reached, sales is told), and a gate that is now
open stops waiting.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.content.sequences import catalog_for
from nurture.people.engagement import check, goal_reached, load_facts
from nurture.people.handoff import mark_ready
from nurture.people.subscribers import enroll_tagged, stop_sending
from nurture.settings import Settings
from nurture.store.tables import Enrollment, EnrollmentStatus, Subscriber


def on_activity(
    session: Session, settings: Settings, subscriber_id: int, now: datetime
) -> list[int]:
    """Apply goals, readiness and gates for one subscriber; returns handoff ids to deliver."""
    catalog = catalog_for(settings.sequences_dir)
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        return []
    handoffs: list[int] = []
    enrollments = session.scalars(
        select(Enrollment).where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
    ).all()
    for enrollment in enrollments:
        seq = catalog.get(enrollment.sequence)
        if seq is None:
            continue
        facts = load_facts(session, subscriber_id, seq, enrollment.id)
        reached = goal_reached(seq.exit_when, facts)
        if reached:
            stop_sending(session, sub, now, reached, seq.name)
            continue
        if seq.readiness is not None and facts.ready(seq.readiness):
            handoff = mark_ready(session, settings, sub, seq, facts, now)
            if handoff is not None:
                handoffs.append(handoff)
        step = seq.step(enrollment.next_step_id or "")
        waiting = enrollment.next_due_at is not None and enrollment.next_due_at > now
        if step is not None and step.when is not None and waiting:
            due = (enrollment.last_sent_at or enrollment.enrolled_at) + step.after
            if due <= now and check(step.when, facts, seq.readiness)[0]:
                enrollment.next_due_at = now  # the gate opened: the next send-due sends it
                enrollment.waiting_for = None
    return handoffs


def on_tag(
    session: Session, settings: Settings, subscriber_id: int, tags: list[str], now: datetime
) -> list[int]:
    """A tag was added: start `trigger: tag:<name>` sequences, then react as to any activity."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is not None:
        enroll_tagged(session, catalog_for(settings.sequences_dir), sub, tags, now)
    return on_activity(session, settings, subscriber_id, now)
