"""What to do with a due enrolment step: send it now, later, skip it, wait at its gate,
divert, or end the enrolment because its goal was reached.

Rules, in order:
0. The reader's choices: a topic they left ends the enrolment; a pause holds the step
   until it ends (nurture.people.preferences).
1. Goal: an `exit_when` event or tag ends the enrolment at once.
2. Gate: a step's `when` must hold. Without `wait_up_to` a closed gate skips the step;
   with it the subscriber waits until the step's due time plus `wait_up_to` (new
   activity re-opens the question at once, see `on_activity`), then goes to `otherwise`
   (a step id, `skip` or `exit`; default `skip`).
3. Send window: outside the sequence's `send_window`, in the subscriber's zone, the step
   moves to the next opening.
4. Daily cap: at most NURTURE_MAX_PER_DAY sequence emails per subscriber per local
   calendar day, all sequences together; one over the cap waits for the next day.
5. Broadcast day: on a local day with a newsletter for this subscriber, the broadcast
   wins and the step waits a day (`nurture.broadcast.sameday`).

Experiments (`content/experiments.py`): after the goal, a subscriber in the sequence's
`holdout:` share skips the step (noted as variant `holdout`); a step with `variants:`
is sent as the variant their address picks, or as the kept one once the experiment
ended (`journeys/experiments.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Integer, String, cast, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session

from nurture.content.durations import format_duration
from nurture.content.experiments import HOLDOUT, HOLDOUT_REASON, held_out, pick, step_experiment
from nurture.content.sequences import Sequence, Step
from nurture.content.topics import topic_of
from nurture.journeys.experiments import ended
from nurture.journeys.windows import next_opening
from nurture.people.engagement import (
    Activity,
    Facts,
    activity_query,
    check,
    facts_from,
    goal_reached,
    load_facts,
)
from nurture.people.preferences import Holds, paused_reason
from nurture.store.tables import NOT_GOING, Delivery, DeliveryKind, Event, Subscriber, Tag
from nurture.zones import zone_for

#: Sequence deliveries that count against the daily cap.


#: How a wait at a closed gate is noted on the enrolment (`waiting_for`).
GATE_WAIT = "waiting at the gate"


class Verdict(StrEnum):
    SEND = "send"
    LATER = "later"  # window or cap: try again at `at`
    WAIT = "wait"  # at a closed gate until `at`
    #: closed gate without waiting, or timed out with otherwise: skip. The reason does not
    #: repeat "skipped": the delivery's status says it.
    SKIP = "skip"
    DIVERT = "divert"  # timed out: go to `target`
    EXIT = "exit"  # goal reached, or timed out with otherwise: exit


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    at: datetime | None = None
    target: str | None = None
    #: The experiment variant it is sent as (SEND), or `holdout` (SKIP).
    variant: str | None = None


@dataclass(frozen=True)
class DueRow:
    enrollment_id: int
    subscriber_id: int
    sequence: str
    step_id: str
    #: When the step fell due by its `after` delay (gates count `wait_up_to` from here).
    due_at: datetime


def among(
    session: Session, column: InstrumentedAttribute[int] | ColumnElement[int], ids: list[int]
) -> ColumnElement[bool]:
    """`column IN (ids)`. On PostgreSQL `column IN (SELECT unnest(CAST(:ids AS int[])))`
    with the ids as one array literal ('{1,2,3}'): the statement text is the same for
    every batch, so psycopg parses it once and the server prepares it (a new text with
    2,000 parameters cost milliseconds a batch), a literal costs nothing to send (psycopg
    dumps a list element by element in Python, 1 ms for 2,000 ids), and the planner
    sees that many ids to look up by index (`= ANY(:ids)` led it to scan the whole
    events table for 1,000)."""
    if session.get_bind().dialect.name == "postgresql":
        array = cast(literal("{" + ",".join(map(str, ids)) + "}", String), ARRAY(Integer))
        return column.in_(select(func.unnest(array)))
    return column.in_(ids)


@dataclass
class Planner:
    """Decides a batch of due rows with few queries: zones, recent sends and the facts
    goals and gates are decided on are loaded in bulk, a handful of queries a batch."""

    session: Session
    default_zone: str
    max_per_day: int
    now: datetime
    zones: dict[int, ZoneInfo] = field(default_factory=dict)
    sent_days: dict[int, list[datetime]] = field(default_factory=dict)
    #: (subscriber id, zone name, due) -> when the step may go, given broadcasts; None
    #: when no broadcast is near, which spares the common case any per-row query.
    defer: Callable[[int, str | None, datetime], datetime] | None = None
    tz_names: dict[int, str | None] = field(default_factory=dict)
    #: Tags and non-bot activity of the subscribers loaded with `facts_for` (those with
    #: any); anyone else's facts are read one at a time (`engagement.load_facts`).
    facts_loaded: set[int] = field(default_factory=set)
    tags: dict[int, set[str]] = field(default_factory=dict)
    activity: dict[int, list[Activity]] = field(default_factory=dict)
    #: The topics each subscriber of the batch left and the pauses running.
    holds: Holds = field(default_factory=Holds)
    #: Addresses, which experiments assign by; read one at a time if not loaded.
    emails: dict[int, str] = field(default_factory=dict)
    #: {experiment: the variant everyone gets since it ended}, read by `load`.
    kept: dict[str, str] = field(default_factory=dict)
    _openings: dict[tuple[str, ZoneInfo], datetime] = field(default_factory=dict)
    _today: dict[ZoneInfo, date] = field(default_factory=dict)

    def load(
        self, timezones: dict[int, str | None], facts_for: list[int] | None = None,
        emails: dict[int, str] | None = None,
    ) -> None:  # fmt: skip
        """Take the batch's subscribers with their time zones and addresses (read with
        the claim) and read their recent sends and the ended experiments; with
        `facts_for`, also the tags and activity of those subscribers (the ones whose
        step has a goal or a gate)."""
        ids = sorted(timezones)
        self.emails.update(emails or {})
        self.kept = {name: end.kept for name, end in ended(self.session).items()}
        for sid, tz in timezones.items():
            self.zones[sid] = zone_for(tz, self.default_zone)
            self.tz_names[sid] = tz
        recent = self.session.connection().execute(
            select(Delivery.subscriber_id, Delivery.created_at).where(
                among(self.session, Delivery.subscriber_id, ids),
                Delivery.kind == DeliveryKind.SEQUENCE,
                Delivery.created_at >= self.now - timedelta(days=2),
                Delivery.status.not_in(NOT_GOING),
            )
        )
        for sid, created in recent:
            self.sent_days.setdefault(sid, []).append(created)
        self.holds = Holds.load(self.session, ids, self.now)
        if facts_for:
            self._load_facts(sorted(set(facts_for)))

    def _load_facts(self, ids: list[int]) -> None:
        """What `engagement.load_facts` reads, for many subscribers in two queries."""
        self.facts_loaded.update(ids)
        for sid, name in self.session.connection().execute(
            select(Tag.subscriber_id, Tag.name).where(among(self.session, Tag.subscriber_id, ids))
        ):
            self.tags.setdefault(sid, set()).add(name)
        query = activity_query(among(self.session, Event.subscriber_id, ids))
        for sid, *activity in self.session.connection().execute(query):
            self.activity.setdefault(sid, []).append(tuple(activity))  # type: ignore[arg-type]

    def facts(self, row: DueRow, seq: Sequence) -> Facts:
        sid = row.subscriber_id
        if sid not in self.facts_loaded:
            return load_facts(self.session, sid, seq, row.enrollment_id)
        tags, activity = self.tags.get(sid, set()), self.activity.get(sid, [])
        if not tags and not activity:
            return _NO_FACTS
        return facts_from(tags, activity, seq, row.enrollment_id)

    def zone(self, subscriber_id: int) -> ZoneInfo:
        return self.zones.get(subscriber_id) or zone_for(None, self.default_zone)

    def decide(self, row: DueRow, seq: Sequence, step: Step) -> Decision:
        held = self._held(row, seq)
        if held is not None:
            return held
        facts = None
        if seq.exit_when is not None or step.when is not None:
            facts = self.facts(row, seq)
            reached = goal_reached(seq.exit_when, facts)
            if reached:
                return Decision(Verdict.EXIT, reached)
        if seq.holdout is not None and held_out(self.email(row), seq.name, seq.holdout):
            return Decision(Verdict.SKIP, HOLDOUT_REASON, variant=HOLDOUT)
        if step.when is not None and facts is not None:
            gate = self._gate(row, seq, step, facts)
            if gate is not None:
                return gate
        decision = self._timing(row, seq)
        if decision.verdict == Verdict.SEND and step.variants:
            name = step_experiment(seq.name, step.id)
            variant = self.kept.get(name) or pick(step.variants, self.email(row), name)
            return Decision(Verdict.SEND, variant=variant)
        return decision

    def email(self, row: DueRow) -> str:
        """The subscriber's address, which experiments assign by."""
        sid = row.subscriber_id
        if sid not in self.emails:
            self.emails[sid] = (
                self.session.scalar(select(Subscriber.email).where(Subscriber.id == sid)) or ""
            )
        return self.emails[sid]

    def _held(self, row: DueRow, seq: Sequence) -> Decision | None:
        """The reader's choices come first: a topic they left ends the enrolment, a pause
        holds the step until it ends (then it goes on where it was)."""
        left = self.holds.left_reason(row.subscriber_id, topic_of(seq))
        if left:
            return Decision(Verdict.EXIT, left)
        until = self.holds.paused_until(row.subscriber_id)
        return None if until is None else Decision(Verdict.LATER, paused_reason(until), at=until)

    def _gate(self, row: DueRow, seq: Sequence, step: Step, facts: Facts) -> Decision | None:
        assert step.when is not None
        ok, why = check(step.when, facts, seq.readiness)
        if ok:
            return None
        if step.wait_up_to is None:
            return Decision(Verdict.SKIP, f"gate closed ({why})")
        deadline = row.due_at + step.wait_up_to
        if self.now < deadline:
            return Decision(Verdict.WAIT, f"{GATE_WAIT}: {why}", at=deadline)
        otherwise = step.otherwise or "skip"
        reason = f"gate timed out after {format_duration(step.wait_up_to)} ({why})"
        if otherwise == "skip":
            return Decision(Verdict.SKIP, reason)
        if otherwise == "exit":
            return Decision(Verdict.EXIT, f"{reason}: left the sequence")
        return Decision(Verdict.DIVERT, f"{reason}: on to {otherwise}", target=otherwise)

    def _timing(self, row: DueRow, seq: Sequence) -> Decision:
        zone = self.zone(row.subscriber_id)
        # Both depend on `now` (fixed for the batch), the zone and the window only, and a
        # batch has few zones: worked out once each, not once a row.
        key = (seq.name, zone)
        if key not in self._openings:
            self._openings[key] = next_opening(self.now, seq.send_window, zone)
        opening = self._openings[key]
        if opening > self.now:
            return Decision(Verdict.LATER, "outside the send window", at=opening)
        if zone not in self._today:
            self._today[zone] = self.now.astimezone(zone).date()
        today = self._today[zone]
        sent = self.sent_days.setdefault(row.subscriber_id, [])
        if sum(1 for t in sent if t.astimezone(zone).date() == today) >= self.max_per_day:
            tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time())
            at = tomorrow.replace(tzinfo=zone)
            return Decision(Verdict.LATER, "daily email limit reached",
                            at=next_opening(at, seq.send_window, zone))  # fmt: skip
        if self.defer is not None:
            moved = self.defer(row.subscriber_id, self.tz_names.get(row.subscriber_id), self.now)
            if moved > self.now:
                return Decision(Verdict.LATER, "a newsletter goes out that day", at=moved)
        sent.append(self.now)  # later rows of this batch see this send
        return Decision(Verdict.SEND)


#: The facts of someone without tags or activity (most of a batch, usually).
_NO_FACTS = Facts(frozenset(), frozenset(), frozenset(), frozenset(), {})
