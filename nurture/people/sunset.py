"""The `[sunset]` policy, applied: who went silent is put in the win-back, who answers is
won back, who stays silent is unsubscribed (reason "inactive") or stops receiving
newsletters.

One run, in one transaction at one `now`, under one lock, goes in this order:
1. won back: a round whose subscriber opened or clicked (or confirmed again, or reached
   the win-back's goal) since it started ends; so does a stopped one who reads again;
2. left: a round whose subscriber unsubscribed or bounced by themselves is closed;
3. enter: whoever is inactive and in no round starts one, in the win-back sequence
   (`send-due` looks once in LOOK_EVERY: this step reads the whole list);
4. decide: a round whose win-back ended `grace` ago (at once without a win-back) gets
   `then`.
Each step is a few set-based statements (UPDATE … WHERE …, INSERT … SELECT; what follows
from the rounds an UPDATE closed is reached by the ids it returns, a chunk a statement):
nobody is looked at one by one in Python. Each person is tested by correlated scalar
subqueries, an index probe each, never by a join the planner could turn quadratic on a
table it has no statistics for yet. The `sunsets` table is the ledger. The dry run asks
the same clauses with SELECTs only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, aliased

from nurture.content.sequences import Catalog, Sequence
from nurture.content.winback import winback_sequence
from nurture.people.engaged import engaged, inactive
from nurture.store.sql import among, constant, insert_each
from nurture.store.tables import (
    SUNSET_OPEN,
    TO_SEND,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    LastRun,
    Subscriber,
    SubscriberStatus,
    Sunset,
    SunsetOutcome,
)
from nurture.sunsetpolicy import UNSUBSCRIBE, SunsetPolicy

#: Why the policy ended someone's enrolments and emails: the reason they were unsubscribed.
INACTIVE = "inactive (sunset)"
WON_BACK = "won back"
#: Why a stopped subscriber's newsletters still waiting were cancelled.
STOPPED = "newsletters stopped: inactive (sunset)"
#: Broadcast emails not sent yet, which stopping newsletters cancels.
WAITING = (DeliveryStatus.SCHEDULED, *TO_SEND)
#: PostgreSQL advisory lock held by a run, so two `send-due` hosts never both enrol the
#: same person (on SQLite every transaction is BEGIN IMMEDIATE: they queue anyway).
LOCK = 0x73756E73  # "suns"
#: How often `send-due` looks for the newly inactive (`nurture sunset` always does): the
#: policy counts in days, and the look reads the whole list.
LOOK_EVERY = timedelta(hours=1)
#: The name of that look in `last_runs`.
LOOKED = "sunset: looked for the inactive"
#: Ids a statement when the rounds a run closed are carried over to their enrolments,
#: emails and subscribers: SQLite takes at most 32,766 parameters a statement.
CHUNK = 5000
#: The tables as the rules' subqueries name them: apart from an UPDATE of the same table
#: around them, so they never correlate with the row being updated.
_ENROLMENT = aliased(Enrollment)
_PERSON = aliased(Subscriber)
_SUNSETS = cast(Table, Sunset.__table__)
_ENROLMENTS = cast(Table, Enrollment.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)
_SUBSCRIBERS = cast(Table, Subscriber.__table__)


#: Each count of a run in words, in the order they are said.
WORDS = {"winback": "into the win-back", "won_back": "won back",
         "unsubscribed": "unsubscribed (inactive)", "stopped": "newsletters stopped",
         "left": "left during the win-back"}  # fmt: skip


@dataclass(frozen=True)
class SunsetCounts:
    """What a run did, or would do."""

    won_back: int = 0
    winback: int = 0  # put in the win-back
    unsubscribed: int = 0
    stopped: int = 0
    left: int = 0

    def in_words(self) -> dict[str, int]:
        """{"into the win-back": 3, …}, every count: what `send-due` adds to its own."""
        return {words: getattr(self, name) for name, words in WORDS.items()}

    def parts(self) -> list[str]:
        """["3 into the win-back", …], the counts that are not 0."""
        return [f"{n} {words}" for words, n in self.in_words().items() if n]


@dataclass(frozen=True)
class Rules:
    """The policy's clauses at one `now`."""

    policy: SunsetPolicy
    winback: Sequence | None
    now: datetime

    @property
    def cutoff(self) -> datetime:
        return self.now - self.policy.inactive_for

    def _person(self, column: Any) -> Any:
        """`column` of the round's subscriber (a scalar subquery: see engaged.latest)."""
        return select(column).where(_PERSON.id == Sunset.subscriber_id).scalar_subquery()

    def _returned(self, since: Any) -> ColumnElement[bool]:
        """The round's subscriber opened or clicked, or confirmed again, since `since`."""
        again = select(_PERSON.id).where(_PERSON.id == Sunset.subscriber_id,
                                         _PERSON.confirmed_at > since)  # fmt: skip
        return or_(engaged(Sunset.subscriber_id, since), again.scalar_subquery().is_not(None))

    def won_back(self) -> ColumnElement[bool]:
        """Rounds (of active subscribers) that end because the reader answered. Every
        part is true or false, never NULL: the dry run asks for `not won_back`."""
        reason = select(_ENROLMENT.end_reason).where(_ENROLMENT.id == Sunset.enrollment_id)
        goal = func.coalesce(reason.scalar_subquery(), "").like("goal reached%")
        return and_(
            self._person(_PERSON.status) == SubscriberStatus.ACTIVE,
            or_(and_(Sunset.outcome == SunsetOutcome.WINBACK,
                     or_(self._returned(Sunset.started_at), goal)),
                and_(Sunset.outcome == SunsetOutcome.STOPPED, self._returned(Sunset.decided_at))),
        )  # fmt: skip

    def left(self) -> ColumnElement[bool]:
        """Rounds whose subscriber left by themselves (unsubscribed, bounced)."""
        return and_(Sunset.outcome == SunsetOutcome.WINBACK,
                    self._person(_PERSON.status) != SubscriberStatus.ACTIVE)  # fmt: skip

    def entering(self) -> ColumnElement[bool]:
        """Subscribers found inactive now, in no round, and in none that ended lately (a
        goal reached without a click must not start the win-back again at once)."""
        rounds = select(Sunset.id).where(
            Sunset.subscriber_id == Subscriber.id,
            or_(Sunset.outcome.in_(SUNSET_OPEN),
                func.coalesce(Sunset.decided_at, Sunset.started_at) > self.cutoff),
        )  # fmt: skip
        found = [Subscriber.status == SubscriberStatus.ACTIVE, inactive(self.cutoff),
                 rounds.limit(1).scalar_subquery().is_(None)]  # fmt: skip
        if self.winback is not None:
            found.append(select(_ENROLMENT.id).where(
                _ENROLMENT.subscriber_id == Subscriber.id,
                _ENROLMENT.sequence == self.winback.name,
                _ENROLMENT.status == EnrollmentStatus.ACTIVE,
            ).limit(1).scalar_subquery().is_(None))  # fmt: skip
        return and_(*found)

    def due(self) -> ColumnElement[bool]:
        """Rounds whose win-back ended `grace` ago, or that have none: `then` applies."""
        over = select(_ENROLMENT.id).where(
            _ENROLMENT.id == Sunset.enrollment_id,
            _ENROLMENT.status != EnrollmentStatus.ACTIVE,
            _ENROLMENT.ended_at <= self.now - self.policy.grace,
        )  # fmt: skip
        return and_(Sunset.outcome == SunsetOutcome.WINBACK,
                    or_(Sunset.enrollment_id.is_(None), over.scalar_subquery().is_not(None)))  # fmt: skip


def newsletters_stopped() -> ColumnElement[bool]:
    """Subscribers the policy stopped sending newsletters to (then = "stop_broadcasts")."""
    stopped = select(Sunset.id).where(Sunset.subscriber_id == Subscriber.id,
                                      Sunset.outcome == SunsetOutcome.STOPPED)  # fmt: skip
    return stopped.limit(1).scalar_subquery().is_not(None)


def rules_for(policy: SunsetPolicy, catalog: Catalog, now: datetime) -> Rules:
    """ConfigError when the win-back sequence is missing or starts by itself."""
    return Rules(policy, winback_sequence(policy, catalog), now)


def apply_sunset(session: Session, rules: Rules, look_every: timedelta | None = None
                 ) -> SunsetCounts:  # fmt: skip
    """One run of the policy (see the module's docstring), in the caller's transaction.
    With `look_every`, the newly inactive are looked for only if the last look is that
    long ago: it reads the whole list, where the rest reads only the open rounds."""
    if no_jit(session):
        session.execute(select(func.pg_advisory_xact_lock(LOCK)))
    won_back = _win_back(session, rules)
    left = len(_close(session, rules.left(), SunsetOutcome.LEFT, rules.now, Sunset.id))
    entered = _enter(session, rules) if _time_to_look(session, rules.now, look_every) else 0
    decided = _decide(session, rules)
    then_unsubscribe = rules.policy.then == UNSUBSCRIBE
    return SunsetCounts(
        won_back=won_back, winback=entered if rules.winback else 0, left=left,
        unsubscribed=decided if then_unsubscribe else 0,
        stopped=0 if then_unsubscribe else decided,
    )  # fmt: skip


def no_jit(session: Session) -> bool:
    """On PostgreSQL, no JIT compiling in this transaction; True there. A row's scalar
    subqueries make the planner price a look at a whole list high enough to compile it,
    and for such a plan EXPLAIN ANALYZE showed compiling costing most of the look."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    session.execute(text("SET LOCAL jit = off"))
    return True


def _time_to_look(session: Session, now: datetime, every: timedelta | None) -> bool:
    """Whether to look for the newly inactive now; if so, this look is noted (under the
    run's lock, so of several hosts one looks)."""
    last = session.get(LastRun, LOOKED)
    if every is not None and last is not None and last.at > now - every:
        return False
    session.merge(LastRun(name=LOOKED, at=now))
    session.flush()
    return True


def _close(session: Session, where: ColumnElement[bool], outcome: str, now: datetime,
           returning: Any) -> list[int | None]:  # fmt: skip
    """Give the rounds `where` their outcome; returns `returning` of each (None: unset).

    The rounds change first, and what follows them (enrolments, emails, subscribers) is
    reached by the ids this returns: looked up by index, whatever the planner thinks of
    a table it has no statistics for yet (a nested `IN (SELECT …)` over rows written a
    moment ago became a nested loop over both tables on PostgreSQL)."""
    stmt = update(_SUNSETS).where(where).values(outcome=outcome, decided_at=now)
    return list(session.execute(stmt.returning(returning)).scalars())


def _set(session: Session, column: Any, given: list[int | None], *where: ColumnElement[bool],
         **values: Any) -> list[int | None]:  # fmt: skip
    """UPDATE `column`'s table SET `values` for the rows whose `column` is among `given` (a
    chunk a statement) and `where`; returns the ids of the rows updated."""
    table, done = column.table, []
    ids = [i for i in given if i is not None]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        stmt = update(table).where(among(session, column, chunk), *where).values(**values)
        done += list(session.execute(stmt.returning(table.c.id)).scalars())
    return done


def _end(session: Session, column: Any, ids: list[int | None], now: datetime, reason: str
         ) -> None:  # fmt: skip
    """End the active enrolments whose `column` is among `ids`, and cancel their emails
    not sent yet."""
    ended = _set(session, column, ids, _ENROLMENTS.c.status == EnrollmentStatus.ACTIVE,
                 status=EnrollmentStatus.EXITED, next_due_at=None, ended_at=now, end_reason=reason)  # fmt: skip
    _set(session, _DELIVERIES.c.enrollment_id, ended, _DELIVERIES.c.status.in_(TO_SEND),
         status=DeliveryStatus.CANCELLED, error=reason)  # fmt: skip


def _win_back(session: Session, rules: Rules) -> int:
    won = _close(session, rules.won_back(), SunsetOutcome.WON_BACK, rules.now, Sunset.enrollment_id)
    _end(session, _ENROLMENTS.c.id, won, rules.now, WON_BACK)  # a stopped one's ended long ago
    return len(won)


def _enter(session: Session, rules: Rules) -> int:
    """Start a round for everyone found inactive; with a win-back, enrol them in a new
    round of it and note the enrolment on their round.

    The people found are read first and written by INSERT … SELECT over their ids
    (store.sql.insert_each), never by one INSERT whose subqueries read the table it
    fills: PostgreSQL plans that with the table empty (a seq scan costs nothing then),
    and rescans its own new rows for every row, which grows with the square of the
    people found."""
    now = rules.now
    people = list(session.scalars(select(Subscriber.id).where(rules.entering())))
    seq = rules.winback
    if seq is None or not people:
        insert_each(session, _SUNSETS, "subscriber_id", people,
                    {"outcome": SunsetOutcome.WINBACK, "started_at": now})  # fmt: skip
        return len(people)
    first = seq.steps[0]
    values = {"sequence": seq.name, "status": EnrollmentStatus.ACTIVE, "next_step_id": first.id,
              "next_due_at": now + first.after, "enrolled_at": now}  # fmt: skip
    for number, ids in _next_rounds(session, seq.name, people).items():
        insert_each(session, _ENROLMENTS, "subscriber_id", ids, values | {"round": number})
    for start in range(0, len(people), CHUNK):  # each round names its new enrolment
        new = select(Enrollment.subscriber_id, Enrollment.id,
                     constant(Sunset.outcome, SunsetOutcome.WINBACK),
                     constant(Sunset.started_at, now)).where(
            Enrollment.sequence == seq.name, Enrollment.status == EnrollmentStatus.ACTIVE,
            among(session, Enrollment.subscriber_id, people[start : start + CHUNK]),
        )  # fmt: skip
        session.execute(insert(_SUNSETS).from_select(
            ["subscriber_id", "enrollment_id", "outcome", "started_at"], new, include_defaults=False
        ))  # fmt: skip
    return len(people)


def _next_rounds(session: Session, sequence: str, people: list[int]) -> dict[int, list[int]]:
    """The people by the round of `sequence` each starts now: 1 for most, one more than
    their last for those who went through it before."""
    last: dict[int, int] = {}
    for start in range(0, len(people), CHUNK):
        chunk = people[start : start + CHUNK]
        last.update((sid, n) for sid, n in session.execute(
            select(Enrollment.subscriber_id, func.max(Enrollment.round))
            .where(Enrollment.sequence == sequence, among(session, Enrollment.subscriber_id, chunk))
            .group_by(Enrollment.subscriber_id)
        ))  # fmt: skip
    rounds: dict[int, list[int]] = {}
    for person in people:
        rounds.setdefault(last.get(person, 0) + 1, []).append(person)
    return rounds


def _decide(session: Session, rules: Rules) -> int:
    """`then` for every round that is due: unsubscribe (enrolments ended, emails not sent
    yet cancelled, as an unsubscribe does), or cancel their newsletters waiting."""
    now, unsubscribe = rules.now, rules.policy.then == UNSUBSCRIBE
    outcome = SunsetOutcome.UNSUBSCRIBED if unsubscribe else SunsetOutcome.STOPPED
    people = _close(session, rules.due(), outcome, now, Sunset.subscriber_id)
    if unsubscribe:
        _end(session, _ENROLMENTS.c.subscriber_id, people, now, INACTIVE)
        _set(session, _DELIVERIES.c.subscriber_id, people, _DELIVERIES.c.status.in_(TO_SEND),
             status=DeliveryStatus.CANCELLED, error=INACTIVE)  # fmt: skip
        _set(session, _SUBSCRIBERS.c.id, people,
             _SUBSCRIBERS.c.status == SubscriberStatus.ACTIVE,
             status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=now)  # fmt: skip
    else:
        _set(session, _DELIVERIES.c.subscriber_id, people,
             _DELIVERIES.c.kind == DeliveryKind.BROADCAST, _DELIVERIES.c.is_test.is_(False),
             _DELIVERIES.c.status.in_(WAITING), status=DeliveryStatus.CANCELLED, error=STOPPED)  # fmt: skip
    return len(people)
