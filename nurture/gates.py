"""What to do with a due enrolment step: send it now, later, skip it, wait at its gate,
divert, or end the enrolment because its goal was reached.

Rules, in order:
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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.durations import format_duration
from nurture.engagement import Facts, check, goal_reached, load_facts
from nurture.models import Delivery, DeliveryStatus, Subscriber
from nurture.sequences import Sequence, Step
from nurture.windows import next_opening

#: Sequence deliveries that count against the daily cap.
_COUNTED = (DeliveryStatus.SKIPPED, DeliveryStatus.CANCELLED, DeliveryStatus.FAILED)


class Verdict(StrEnum):
    SEND = "send"
    LATER = "later"  # window or cap: try again at `at`
    WAIT = "wait"  # at a closed gate until `at`
    SKIP = "skip"  # closed gate without waiting, or timed out with otherwise: skip
    DIVERT = "divert"  # timed out: go to `target`
    EXIT = "exit"  # goal reached, or timed out with otherwise: exit


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    at: datetime | None = None
    target: str | None = None


@dataclass(frozen=True)
class DueRow:
    enrollment_id: int
    subscriber_id: int
    sequence: str
    step_id: str
    #: When the step fell due by its `after` delay (gates count `wait_up_to` from here).
    due_at: datetime


@dataclass
class Planner:
    """Decides a batch of due rows with few queries: zones and recent sends in bulk."""

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

    def load(self, subscriber_ids: list[int]) -> None:
        ids = sorted(set(subscriber_ids))
        for sid, tz in self.session.execute(
            select(Subscriber.id, Subscriber.timezone).where(Subscriber.id.in_(ids))
        ):
            self.zones[sid] = ZoneInfo(tz or self.default_zone)
            self.tz_names[sid] = tz
        recent = self.session.execute(
            select(Delivery.subscriber_id, Delivery.created_at).where(
                Delivery.subscriber_id.in_(ids),
                Delivery.kind == "sequence",
                Delivery.created_at >= self.now - timedelta(days=2),
                Delivery.status.not_in(_COUNTED),
            )
        )
        for sid, created in recent:
            self.sent_days.setdefault(sid, []).append(created)

    def zone(self, subscriber_id: int) -> ZoneInfo:
        return self.zones.get(subscriber_id) or ZoneInfo(self.default_zone)

    def decide(self, row: DueRow, seq: Sequence, step: Step) -> Decision:
        if seq.exit_when is not None or step.when is not None:
            facts = load_facts(self.session, row.subscriber_id, seq)
            reached = goal_reached(seq.exit_when, facts)
            if reached:
                return Decision(Verdict.EXIT, reached)
            if step.when is not None:
                gate = self._gate(row, seq, step, facts)
                if gate is not None:
                    return gate
        return self._timing(row, seq)

    def _gate(self, row: DueRow, seq: Sequence, step: Step, facts: Facts) -> Decision | None:
        assert step.when is not None
        ok, why = check(step.when, facts, seq.readiness)
        if ok:
            return None
        if step.wait_up_to is None:
            return Decision(Verdict.SKIP, f"gate closed ({why}): skipped")
        deadline = row.due_at + step.wait_up_to
        if self.now < deadline:
            return Decision(Verdict.WAIT, f"waiting at the gate ({why})", at=deadline)
        otherwise = step.otherwise or "skip"
        reason = f"gate timed out after {format_duration(step.wait_up_to)} ({why})"
        if otherwise == "skip":
            return Decision(Verdict.SKIP, f"{reason}: skipped")
        if otherwise == "exit":
            return Decision(Verdict.EXIT, f"{reason}: left the sequence")
        return Decision(Verdict.DIVERT, f"{reason}: on to {otherwise}", target=otherwise)

    def _timing(self, row: DueRow, seq: Sequence) -> Decision:
        zone = self.zone(row.subscriber_id)
        opening = next_opening(self.now, seq.send_window, zone)
        if opening > self.now:
            return Decision(Verdict.LATER, "outside the send window", at=opening)
        today = self.now.astimezone(zone).date()
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
