"""What each active enrolment will receive next, by the real planner, without writing.

`nurture plan` runs this twice, with the recorded catalog and with the workspace's, over
the same enrolments as the database holds them. Each due step is put to
`planner.Planner.decide` at the moment it falls due, as `send-due` would; what follows a
verdict is what `scheduling` does with it (a sent step moves on to the next, due its
`after` later; a skip or divert is due its `after` from the moment of the decision).
Everyone's facts are read once and stay as they are: the forecast assumes no new opens,
clicks or events. Nothing is written.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, Step
from nurture.journeys.planner import DueRow, Planner, Verdict
from nurture.journeys.sameday import broadcasts_near, defer_for_broadcasts
from nurture.settings import Settings
from nurture.store.tables import Enrollment, EnrollmentStatus, Subscriber

#: How far ahead a next email is looked for; beyond it "no email in sight".
LOOKAHEAD = timedelta(days=120)
#: Subscribers whose enrolments are forecast together (their facts read in one go).
CHUNK = 2000
#: Decisions per enrolment before giving up (a loop of diverts would never end).
MAX_DECISIONS = 100


@dataclass(frozen=True)
class Position:
    """An active enrolment as the database has it: the step it waits for and when."""

    enrollment_id: int
    subscriber_id: int
    timezone: str | None
    sequence: str
    step_id: str
    due_at: datetime
    #: The previous send, or the enrolment: what the step's `after` counts from.
    since: datetime
    #: Why the step waits past its due time (the planner's note), if it does.
    waiting_for: str | None = None
    #: The subscriber's address: experiments assign by it.
    email: str = ""


@dataclass
class Outcome:
    """What the planner makes of one enrolment from now on."""

    #: The first email it will send: (step id, when); None if none within LOOKAHEAD.
    first: tuple[str, datetime] | None = None
    #: Every email within the forecast horizon: (step id, when).
    sends: list[tuple[str, datetime]] = field(default_factory=list)
    #: Steps skipped by a closed gate before the first email.
    skipped: list[str] = field(default_factory=list)
    #: Why the enrolment ends before its first email, if it does.
    ends: str | None = None


def positions(session: Session, sequences: set[str]) -> list[Position]:
    """The active enrolments of these sequences that wait for a step (not those whose
    email is in flight now: it goes whatever the files say)."""
    rows = session.execute(
        select(Enrollment.id, Enrollment.subscriber_id, Subscriber.timezone, Enrollment.sequence,
               Enrollment.next_step_id, Enrollment.next_due_at,
               func.coalesce(Enrollment.last_sent_at, Enrollment.enrolled_at),
               Enrollment.waiting_for, Subscriber.email)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.sequence.in_(sequences),
               Enrollment.next_due_at.is_not(None), Enrollment.next_step_id.is_not(None))
        .order_by(Enrollment.id)
    ).all()  # fmt: skip
    return [Position(*row) for row in rows]  # type: ignore[arg-type]


def forecast(
    session: Session, settings: Settings, catalog: Catalog, people: list[Position],
    now: datetime, horizon: timedelta,
) -> dict[int, Outcome]:  # fmt: skip
    """Walk every enrolment forward in time order (the daily cap sees every sequence's
    sends of the same person) until its first email and the end of `horizon`; CHUNK
    people at a time, each with all their enrolments, so the reads stay bounded."""
    mine: dict[int, list[Position]] = {}
    for p in people:
        mine.setdefault(p.subscriber_id, []).append(p)
    ids = list(mine)
    base = Planner(session, settings.timezone, settings.max_per_day, now)
    if broadcasts_near(session, now):
        base.defer = partial(defer_for_broadcasts, session, settings)
    outcomes: dict[int, Outcome] = {}
    for i in range(0, len(ids), CHUNK):
        part = [p for sid in ids[i : i + CHUNK] for p in mine[sid]]
        outcomes.update(_walk(replace(base, zones={}, sent_days={}, tz_names={}, facts_loaded=set(),
                                      tags={}, activity={}), catalog, part, now, horizon))  # fmt: skip
    return outcomes


def _walk(
    base: Planner, catalog: Catalog, people: list[Position], now: datetime, horizon: timedelta
) -> dict[int, Outcome]:
    """`forecast` for one chunk of people."""
    base.load({p.subscriber_id: p.timezone for p in people},
              facts_for=[p.subscriber_id for p in people],
              emails={p.subscriber_id: p.email for p in people})  # fmt: skip
    outcomes = {p.enrollment_id: Outcome() for p in people}
    # (when, enrolment, step id, since, decisions so far)
    due = [(max(p.due_at, now), p.enrollment_id, p.step_id, p.since, 0) for p in people]
    heapq.heapify(due)
    by_id = {p.enrollment_id: p for p in people}
    until = now + horizon
    while due:
        at, eid, step_id, since, n = heapq.heappop(due)
        out, pos = outcomes[eid], by_id[eid]
        if (at > until and out.first is not None) or at > now + LOOKAHEAD or n >= MAX_DECISIONS:
            continue
        nxt = _decide(replace(base, now=at, _openings={}, _today={}), catalog, pos, step_id,
                      since, out, until)  # fmt: skip
        if nxt is not None:
            heapq.heappush(due, (nxt[0], eid, nxt[1], nxt[2], n + 1))
    return outcomes


def _decide(
    planner: Planner, catalog: Catalog, pos: Position, step_id: str, since: datetime,
    out: Outcome, until: datetime,
) -> tuple[datetime, str, datetime] | None:  # fmt: skip
    """One decision at `planner.now`; returns the next (when, step id, since), or None
    when this enrolment has nothing more to send."""
    now = planner.now
    seq = catalog.get(pos.sequence)
    step = seq.step(step_id) if seq else None
    if seq is None or step is None:
        if out.first is None:
            out.ends = ("its sequence is gone: it waits, paused" if seq is None
                        else "its next step was removed from the sequence")  # fmt: skip
        return None
    row = DueRow(pos.enrollment_id, pos.subscriber_id, seq.name, step.id, since + step.after)
    decision = planner.decide(row, seq, step)
    target: Step | None
    if decision.verdict == Verdict.SEND:
        out.first = out.first or (step.id, now)
        if now <= until:
            out.sends.append((step.id, now))
        target, since = seq.after(step.id), now
    elif decision.verdict in (Verdict.LATER, Verdict.WAIT):
        assert decision.at is not None
        return decision.at, step.id, since
    elif decision.verdict == Verdict.EXIT:
        if out.first is None:
            out.ends = decision.reason
        return None
    else:  # SKIP or DIVERT, as scheduling._move: the target is due its delay from now
        if out.first is None:
            out.skipped.append(step.id)
        target = seq.step(decision.target) if decision.target else seq.after(step.id)
        if target is not None:
            return now + target.after, target.id, since
    if target is None:
        if out.first is None:
            out.ends = "finished the sequence"
        return None
    return now + target.after, target.id, since
