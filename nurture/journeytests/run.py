"""Play every persona of the journey tests and check what they got against what the
file expects: each failure as `path:line: expected …, got …`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nurture.content.sequences import catalog_for
from nurture.errors import SequenceError
from nurture.journeytests.spec import Day, Persona, TestFile, load_tests
from nurture.settings import Settings
from nurture.simulate import Journey, Signup, TimelineRow, play


@dataclass
class Outcome:
    """What a run found: the personas played, checks made, failures (and load problems)."""

    files: int = 0
    personas: int = 0
    checks: int = 0
    failures: list[SequenceError] = field(default_factory=list)
    #: Test files that could not be read (their personas' snapshots are not stale).
    unreadable: int = 0
    #: (test file, persona, its journey) for snapshots
    journeys: list[tuple[TestFile, Persona, Journey]] = field(default_factory=list)

    def fail(self, path: str, line: int, persona: Persona, message: str) -> None:
        self.failures.append(SequenceError(path, line, f"{message} (persona {persona.name})"))

    def summary(self) -> str:
        """'1 test file, 4 personas, 49 checks: all passed' (or 'N failed')."""
        head = ", ".join(_count(n, what) for n, what in
                         ((self.files, "test file"), (self.personas, "persona"),
                          (self.checks, "check")))  # fmt: skip
        bad = len(self.failures)
        return f"{head}: {bad} failed" if bad else f"{head}: all passed"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def run_tests(settings: Settings) -> Outcome:
    """Load `sequences/tests/*.yaml`, play each persona on a throw-away database, check."""
    catalog = catalog_for(settings.sequences_dir)
    tests, problems = load_tests(settings.sequences_dir / "tests", catalog, settings.timezone)
    unreadable = len({p.path for p in problems} - {t.path for t in tests})
    outcome = Outcome(files=len(tests) + unreadable, unreadable=unreadable)
    outcome.failures.extend(problems)
    for test in tests:
        for persona in test.personas:
            days = test.days
            if test.invariants.ends_within:
                days = max(days, test.invariants.ends_within[0].days + 1)
            signup = Signup(zone=persona.zone, at=persona.signup.astimezone(UTC),
                            first_name=persona.first_name, email=persona.email,
                            tags=persona.tags, attributes=persona.attributes)  # fmt: skip
            journey = play(settings, test.sequence, signup, persona.events, days)
            outcome.personas += 1
            outcome.journeys.append((test, persona, journey))
            check_persona(outcome, test, persona, journey)
            check_invariants(outcome, test, persona, journey)
    return outcome


def _day(journey: Journey, at: datetime) -> int:
    start = journey.start.astimezone(journey.zone)
    return (at.astimezone(start.tzinfo).date() - start.date()).days


def _when(journey: Journey, at: datetime | None) -> str:
    if at is None:
        return "never"
    local = at.astimezone(journey.zone)
    return f"day {_day(journey, at)} ({local:%a %Y-%m-%d %H:%M})"


def _matches(journey: Journey, want: Day, at: datetime | None) -> bool:
    if want.never or at is None:
        return want.never and at is None
    if want.number == -1:
        return True
    if want.on is not None:
        return at.astimezone(journey.zone).date() == want.on
    return _day(journey, at) == want.number


def _shown(want: Day) -> str:
    if want.never:
        return "never"
    return str(want.on) if want.on is not None else f"day {want.number}"


def _on(want: Day) -> str:
    return "never" if want.never else f"on {_shown(want)}"


def _sent(journey: Journey) -> list[TimelineRow]:
    return [r for r in journey.rows if r.status == "sent"]


def _why_not(journey: Journey, step_id: str) -> str:
    """Why a step never arrived, from the timeline and the enrolment."""
    row = next((r for r in journey.rows if r.step_id == step_id), None)
    if row is not None:
        return f" ({row.status}: {row.note})" if row.note else f" ({row.status})"
    if journey.ended_at is not None:
        reason = f": {journey.end_reason}" if journey.end_reason else ""
        return f" (the enrolment ended on {_when(journey, journey.ended_at)}{reason})"
    if journey.waiting_at:
        return f" (still waiting at {journey.waiting_at} when the run ended)"
    return ""


def check_persona(outcome: Outcome, test: TestFile, persona: Persona, journey: Journey) -> None:
    expect, path = persona.expect, test.path
    sent = _sent(journey)
    for step_id, want in expect.receives.items():
        outcome.checks += 1
        at = next((r.at for r in sent if r.step_id == step_id), None)
        if not _matches(journey, want, at):
            wanted = "at some point" if want.number == -1 else _on(want)
            got = _when(journey, at) + (_why_not(journey, step_id) if at is None else "")
            outcome.fail(path, want.line, persona, f"expected {step_id} {wanted}, got {got}")
    for step_id, line in expect.never.items():
        outcome.checks += 1
        at = next((r.at for r in sent if r.step_id == step_id), None)
        if at is not None:
            outcome.fail(path, line, persona,
                         f"expected {step_id} never, got it on {_when(journey, at)}")  # fmt: skip
    _check_end(outcome, test, persona, journey)
    pairs: tuple[tuple[str, Day | None, datetime | None], ...] = (
        ("ready", expect.ready, journey.ready_at),
        ("handoff", expect.handoff, journey.handoffs[0] if journey.handoffs else None),
    )
    for what, wanted_day, when in pairs:
        if wanted_day is None:
            continue
        outcome.checks += 1
        if not _matches(journey, wanted_day, when):
            outcome.fail(path, wanted_day.line, persona,
                         f"expected {what} {_shown(wanted_day)}, got {_when(journey, when)}")  # fmt: skip
    if expect.score is not None:
        outcome.checks += 1
        if journey.score != expect.score[0]:
            outcome.fail(path, expect.score[1], persona,
                         f"expected score {expect.score[0]}, got {journey.score}")  # fmt: skip


def _check_end(outcome: Outcome, test: TestFile, persona: Persona, journey: Journey) -> None:
    expect = persona.expect
    if expect.ends is not None:
        outcome.checks += 1
        if not _matches(journey, expect.ends, journey.ended_at):
            got = _when(journey, journey.ended_at)
            if journey.ended_at is None and journey.waiting_at:
                got += f" (still waiting at {journey.waiting_at})"
            outcome.fail(test.path, expect.ends.line, persona,
                         f"expected the enrolment to end {_on(expect.ends)}, got {got}")  # fmt: skip
    if expect.ends_status is not None:
        outcome.checks += 1
        status, line = expect.ends_status
        if journey.status != status:
            reason = f" ({journey.end_reason})" if journey.end_reason else ""
            outcome.fail(test.path, line, persona,
                         f"expected status {status}, got {journey.status}{reason}")  # fmt: skip


def check_invariants(outcome: Outcome, test: TestFile, persona: Persona, journey: Journey) -> None:
    rules, path = test.invariants, test.path
    sent = _sent(journey)
    if rules.max_per_local_day is not None:
        most, line = rules.max_per_local_day
        outcome.checks += 1
        by_day: dict[int, list[str]] = defaultdict(list)
        for row in sent:
            by_day[_day(journey, row.at)].append(row.step_id)
        over = [(d, ids) for d, ids in sorted(by_day.items()) if len(ids) > most]
        if over:
            day, ids = over[0]
            outcome.fail(path, line, persona, f"expected at most {most} emails per local day, "
                         f"got {len(ids)} on day {day} ({', '.join(ids)})")  # fmt: skip
    if rules.ends_within is not None:
        within, line = rules.ends_within
        outcome.checks += 1
        ended = journey.ended_at
        if ended is None or ended - journey.start > within:
            got = (f"still active after {_day(journey, journey.start + within)} days"
                   + (f", waiting at {journey.waiting_at}" if journey.waiting_at else "")
                   if ended is None else f"it ended on {_when(journey, ended)}")  # fmt: skip
            outcome.fail(path, line, persona,
                         f"expected the enrolment to end within {within.days} days, got {got}")  # fmt: skip
    for label, line in rules.no_sales_after:
        outcome.checks += 1
        happened = next((r.at for r in journey.rows if r.status == "event"
                         and r.step_id == label and not r.note.startswith("ignored")), None)  # fmt: skip
        if happened is None:
            continue
        late = [r for r in sent if r.stage == "sales" and r.at >= happened]
        if late:
            outcome.fail(path, line, persona, f"expected no sales step after {label} "
                         f"({_when(journey, happened)}), got {late[0].step_id} on "
                         f"{_when(journey, late[0].at)}")  # fmt: skip
