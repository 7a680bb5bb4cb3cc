"""`nurture simulate`: the dated timeline one new subscriber would receive.

The subscriber is enrolled as its trigger would enrol them: in every sequence with the
same trigger, so the daily cap (NURTURE_MAX_PER_DAY) is shared as it is for real, and
the other sequences' emails appear as `sequence/step`.

It runs the real code path (enrol, claim, gates, render, send) against a throw-away
SQLite database and outbox with a moving clock, so what it shows is what would
happen, and no data of the workspace is touched. `--events` plays the subscriber's
activity (`click:welcome@1d`, `open:get-known@5d`, `event:pricing_viewed@3d`,
`tag:vip@2d`) at those offsets from signup, through the same code as real events.

Experiments assign variants by address: `email` simulates a given one (the variant a
real subscriber with that address gets), and the ended experiments of the workspace's
database (`kept`) are copied in, so a kept variant shows as it is sent.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture import clock
from nurture.content.durations import parse_duration
from nurture.content.experiments import step_experiment
from nurture.content.sequences import Catalog, Sequence, catalog_for
from nurture.errors import NurtureError
from nurture.journeys.experiments import kept_variants
from nurture.people.activity import on_activity, on_tag
from nurture.people.engagement import live_score
from nurture.people.enrolment import enroll, enroll_triggered
from nurture.people.subscribers import add_tags, normalize_email
from nurture.send_due import run_send_due
from nurture.settings import Settings
from nurture.store.engine import dispose, session_scope
from nurture.store.tables import (
    Delivery,
    Enrollment,
    EnrollmentStatus,
    Event,
    ExperimentEnd,
    Handoff,
    Subscriber,
    SubscriberStatus,
)

_EVENT = re.compile(r"^(click|open|event|tag):([\w.:-]+)@(.+)$")


@dataclass(frozen=True)
class TimelineRow:
    at: datetime
    local: datetime
    step_id: str
    stage: str
    subject: str
    status: str
    note: str


@dataclass(frozen=True)
class PlannedEvent:
    kind: str  # click | open | event | tag
    name: str
    offset: timedelta

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_event(part: str) -> PlannedEvent:
    """`click:welcome@1d` -> a planned event; ValueError says what is wrong with it."""
    match = _EVENT.match(part.strip())
    if not match:
        raise ValueError(f"{part!r} is not KIND:NAME@WHEN "
                         "(like click:welcome@1d or event:pricing_viewed@3d)")  # fmt: skip
    try:
        offset = parse_duration(match.group(3))
    except ValueError as e:
        raise ValueError(f"{part!r}: {e}") from None
    return PlannedEvent(match.group(1), match.group(2), offset)


def parse_events(text: str | None) -> list[PlannedEvent]:
    """`click:welcome@1d,event:pricing_viewed@3d` -> planned events, or a clear error."""
    planned = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        try:
            planned.append(parse_event(part))
        except ValueError as e:
            raise NurtureError(f"--events: {e}") from None
    return sorted(planned, key=lambda e: e.offset)


@dataclass(frozen=True)
class Signup:
    """Who signs up in a simulation, and when (None: now, to the minute)."""

    zone: ZoneInfo
    at: datetime | None = None
    first_name: str | None = "Sam"
    email: str = "new.subscriber@example.com"
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Journey:
    """What became of one simulated subscriber: the timeline, and where they stand."""

    start: datetime
    zone: ZoneInfo
    rows: list[TimelineRow]
    status: str  # of their enrolment in the sequence asked about
    ended_at: datetime | None
    end_reason: str | None
    waiting_at: str | None  # the next step of an enrolment still active
    ready_at: datetime | None
    score: int
    handoffs: list[datetime]


def simulate(
    settings: Settings, name: str, days: int, timezone: str | None, events: str | None = None,
    email: str | None = None,
) -> list[TimelineRow]:  # fmt: skip
    """`nurture simulate`: with the workspace's ended experiments, when it has any."""
    zone = ZoneInfo(timezone or settings.timezone)
    signup = Signup(zone, email=normalize_email(email)) if email else Signup(zone)
    catalog = catalog_for(settings.sequences_dir)
    has_variants = any(step.variants for seq in catalog.sequences.values() for step in seq.steps)
    kept = kept_variants(settings) if has_variants else {}
    return play(settings, name, signup, parse_events(events), days, kept).rows


def play(
    settings: Settings, name: str, signup: Signup, planned: list[PlannedEvent], days: int,
    kept: dict[str, str] | None = None,
) -> Journey:  # fmt: skip
    """One subscriber's journey through sequence `name` for `days`, on a throw-away
    database; what `simulate` prints and `nurture test` checks."""
    catalog = catalog_for(settings.sequences_dir)
    seq = catalog.get(name)
    if seq is None:
        known = ", ".join(sorted(catalog.sequences)) or "none"
        raise NurtureError(f"no sequence named {name!r} (known: {known})")
    for event in planned:
        if event.kind in ("click", "open") and seq.step(event.name) is None:
            raise NurtureError(f"--events: {seq.name} has no step {event.name!r}")
    with tempfile.TemporaryDirectory(prefix="nurture-simulate-") as tmp:
        sim = replace(
            settings, database_url=f"sqlite:///{tmp}/simulate.db", redis_url=None,
            smtp_url=None, outbox_dir=Path(tmp) / "outbox",
            sender=settings.sender or "Preview <preview@example.com>",
            sales_webhook_url=None, sales_email=None,  # nothing leaves a simulation
        )  # fmt: skip
        try:
            return _run(sim, seq.name, days, signup, sorted(planned, key=lambda e: e.offset),
                        kept or {})  # fmt: skip
        finally:
            dispose(sim.database_url)


def _run(
    sim: Settings, name: str, days: int, signup: Signup, planned: list[PlannedEvent],
    kept: dict[str, str],
) -> Journey:  # fmt: skip
    start = (signup.at or clock.now()).replace(second=0, microsecond=0)
    end = start + timedelta(days=days)
    catalog = catalog_for(sim.sequences_dir)
    seq = catalog.sequences[name]
    zone = signup.zone
    notes: list[TimelineRow] = []
    pending = list(planned)
    #: (sequence, step) → why the planner first held it past its due time.
    held: dict[tuple[str, str], str] = {}
    with clock.frozen_at(start):
        with session_scope(sim) as session:
            sub = Subscriber(email=signup.email, first_name=signup.first_name,
                             timezone=zone.key, status=SubscriberStatus.ACTIVE,
                             attributes=dict(signup.attributes))  # fmt: skip
            session.add(sub)
            session.flush()
            sub_id = sub.id
            if signup.tags:
                add_tags(session, sub_id, list(signup.tags))
            session.add_all(ExperimentEnd(name=n, kept=v, at=start, how="copied")
                            for n, v in kept.items())  # fmt: skip
            _enroll_alongside(session, sub_id, catalog, seq, start)
        while True:
            with session_scope(sim) as session:
                due = session.scalar(
                    select(func.min(Enrollment.next_due_at)).where(
                        Enrollment.status == EnrollmentStatus.ACTIVE
                    )
                )
            next_event = start + pending[0].offset if pending else None
            if next_event is not None and next_event <= end and (due is None or next_event < due):
                clock.set_frozen(max(next_event, clock.now()))
                notes.append(_play(sim, sub_id, seq.name, pending.pop(0), zone))
                continue
            if due is None or due > end:
                break
            clock.set_frozen(max(due, clock.now()))
            run_send_due(sim)
            held.update({k: v for k, v in _held_back(sim).items() if k not in held})
        return _journey(sim, catalog, seq, sub_id, start, notes, held, kept)


def _journey(
    sim: Settings, catalog: Catalog, seq: Sequence, sub_id: int, start: datetime,
    notes: list[TimelineRow], held: dict[tuple[str, str], str], kept: dict[str, str],
) -> Journey:  # fmt: skip
    with session_scope(sim) as session:
        sub = session.get(Subscriber, sub_id)
        assert sub is not None
        zone = ZoneInfo(sub.timezone or "UTC")
        deliveries = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        rows = [_row(catalog, seq, d, zone, held, kept) for d in deliveries]
        enrolment = session.scalars(
            select(Enrollment).where(Enrollment.sequence == seq.name).order_by(Enrollment.id)
        ).first()
        handoffs = session.scalars(
            select(Handoff.created_at).where(Handoff.subscriber_id == sub_id)
        ).all()
        score = live_score(session, sub_id, catalog) if seq.readiness else 0
        return Journey(
            start=start, zone=zone, rows=sorted(rows + notes, key=lambda r: r.at),
            status=str(enrolment.status) if enrolment else "",
            ended_at=enrolment.ended_at if enrolment else None,
            end_reason=enrolment.end_reason if enrolment else None,
            waiting_at=enrolment.next_step_id if enrolment and enrolment.ended_at is None else None,
            ready_at=sub.ready_at, score=score, handoffs=list(handoffs),
        )  # fmt: skip


def _row(
    catalog: Catalog, seq: Sequence, d: Delivery, zone: ZoneInfo,
    held: dict[tuple[str, str], str], kept: dict[str, str],
) -> TimelineRow:  # fmt: skip
    other = catalog.get(d.sequence or "")
    step = other.step(d.step_id or "") if other else None
    # the sequence asked about by step id alone; the others it shares the cap with
    label = d.step_id if d.sequence == seq.name else f"{d.sequence}/{d.step_id}"
    at = d.sent_at or d.created_at
    why = held.get((d.sequence or "", d.step_id or ""))
    notes = [f"held back: {why}"] if why else []
    if d.variant and not d.error:
        ended = step_experiment(d.sequence or "", d.step_id or "") in kept
        notes.insert(0, f"variant {d.variant}" + (" (kept: the experiment ended)" if ended else ""))
    return TimelineRow(
        at=at, local=at.astimezone(zone), step_id=label or "",
        stage=str(step.stage) if step else "", subject=d.subject or "",
        status=str(d.status), note=d.error or "; ".join(notes),
    )  # fmt: skip


def _held_back(sim: Settings) -> dict[tuple[str, str], str]:
    """The steps the planner just moved past their due time, and why (daily cap, send
    window, newsletter day), as `subscribers show` says it."""
    with session_scope(sim) as session:
        rows = session.execute(
            select(Enrollment.sequence, Enrollment.next_step_id, Enrollment.waiting_for).where(
                Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.waiting_for.is_not(None)
            )
        ).all()
    return {(seq, step or ""): str(why) for seq, step, why in rows}


def _enroll_alongside(
    session: Session, sub_id: int, catalog: Catalog, seq: Sequence, now: datetime
) -> None:
    """Enrol the simulated subscriber as its trigger would: in `seq` and every other
    sequence with the same `signup` or `tag:` trigger, so they share the daily cap as
    a real subscriber's do. (`manual` and `completed:` sequences start alone.)"""
    if seq.trigger == "signup" or seq.trigger.startswith("tag:"):
        enroll_triggered(session, sub_id, catalog, seq.trigger, now)
    enroll(session, sub_id, seq, now)


def _play(
    sim: Settings, sub_id: int, name: str, event: PlannedEvent, zone: ZoneInfo
) -> TimelineRow:
    """Record one planned event as the web or API would, and react to it."""
    now = clock.now()
    note = ""
    with session_scope(sim) as session:
        if event.kind == "tag":
            on_tag(session, sim, sub_id, add_tags(session, sub_id, [event.name]), now)
        else:
            delivery_id = None
            if event.kind in ("click", "open"):
                delivery_id = session.scalar(
                    select(Delivery.id).where(
                        Delivery.sequence == name,
                        Delivery.step_id == event.name,
                        Delivery.status == "sent",
                    )  # fmt: skip
                )
                if delivery_id is None:
                    note = f"ignored: step {event.name} was not sent by then"
            if not note:
                kind = event.kind if event.kind != "event" else event.name
                session.add(Event(subscriber_id=sub_id, delivery_id=delivery_id, kind=kind,
                                  at=now, bot=False, data={}))  # fmt: skip
                session.flush()
                on_activity(session, sim, sub_id, now)
        ready = session.get(Subscriber, sub_id)
        if not note and ready is not None and ready.ready_at == now:
            score = live_score(session, sub_id, catalog_for(sim.sequences_dir))
            note = f"became sales-ready (score {score})"
    return TimelineRow(at=now, local=now.astimezone(zone), step_id=event.label,
                       stage="activity", subject="", status="event", note=note)  # fmt: skip
