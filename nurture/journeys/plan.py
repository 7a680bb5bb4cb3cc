"""`nurture plan`: what an edit of the sequences does to the people already in them.

The workspace's files are compared with the version `send-due` last ran with (or with a
git ref), step by step id (`content.changes`); then the real planner is run, read-only,
over every active enrolment with the old and with the new catalog (`forecast`), and
the two outcomes are compared person by person: whose enrolment ends, whose next email
moves, who is now skipped by a gate, whose next email is another one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from nurture import clock
from nurture.content.changes import Change, changes
from nurture.content.durations import format_duration
from nurture.content.fields import fields_for
from nurture.content.rendering import renderer_for
from nurture.content.sequences import Catalog, catalog_for
from nurture.content.snapshot import (
    LAYOUT_FILES,
    catalog_from_files,
    files_at_ref,
    workspace_files,
)
from nurture.content.validation import template_problems
from nurture.errors import NurtureError
from nurture.journeys.experiments import Experiment, ended, of_sequences
from nurture.journeys.forecast import Outcome, Position, forecast, positions
from nurture.journeys.versions import recorded_files, retimed
from nurture.settings import Settings
from nurture.store.engine import session_scope

#: The forecast covers this long.
HORIZON = timedelta(days=7)
#: Effects that change what someone receives or when: a reason for a human look.
MOVING = ("ends", "moves", "skipped", "redirected", "later")


@dataclass(frozen=True)
class Effect:
    sequence: str
    step: str
    #: ends, moves, skipped, redirected, later (a later email within the horizon ends,
    #: moves or comes: moving people) or template (not moving anyone)
    kind: str
    count: int
    text: str


@dataclass
class Plan:
    #: What the workspace was compared with ("the recorded version", "git REF"); None
    #: when nothing was recorded yet.
    baseline: str | None
    changes: list[Change] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    #: Active enrolments looked at.
    people: int = 0
    #: {sequence: {step: [emails before, emails after]}} over the next HORIZON.
    forecast: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    #: The workspace's experiments, with those `nurture experiment end` ended.
    experiments: list[Experiment] = field(default_factory=list)

    @property
    def moves_people(self) -> bool:
        return any(e.kind in MOVING for e in self.effects)


def make_plan(settings: Settings, since: str | None = None, now: datetime | None = None) -> Plan:
    """Compare the workspace with the recorded version (or git ref `since`) against the
    live database, which is only read."""
    now = now or clock.now()
    new = catalog_for(settings.sequences_dir, quiet=True)  # its problems are raised, once
    if new.problems:  # a file with errors would look removed: say what is wrong instead
        more = f" (and {len(new.problems) - 1} more)" if len(new.problems) > 1 else ""
        raise NurtureError(f"{new.problems[0]}{more}: fix the sequences first "
                           "(`nurture validate` lists every problem)")  # fmt: skip
    _check_sendable(settings)
    new_files = _flat(workspace_files(settings.workspace, new))
    if since is not None:
        old_files, baseline = files_at_ref(settings.workspace, since), f"git {since}"
    else:
        recorded = recorded_files(settings)
        if not recorded:
            return Plan(None, [Change(n, None, "sequence", f"sequence {n} added")
                               for n in sorted(new.sequences)])  # fmt: skip
        old_files, baseline = _flat(recorded), "the recorded version"
        if not any(p in old_files for p in LAYOUT_FILES):  # recorded before layouts were
            old_files.update({p: new_files[p] for p in LAYOUT_FILES if p in new_files})
    old = catalog_from_files(old_files)
    plan = Plan(baseline, changes(old, new, old_files, new_files))
    names = set(old.sequences) | set(new.sequences)
    with session_scope(settings) as session:
        people = positions(session, names)
        moved = [_shifted(p, old, new, now) for p in people]
        before = forecast(session, settings, old, people, now, HORIZON)
        after = forecast(session, settings, new, moved, now, HORIZON)
        plan.experiments = of_sequences(new, ended(session))
        session.rollback()  # nothing was written; nothing may be
    plan.people = len(people)
    plan.effects = _effects(people, before, after, plan.changes)
    plan.forecast = _emails(people, old, new, before, after)
    return plan


def _check_sendable(settings: Settings) -> None:
    """An edit whose emails cannot be rendered (a missing template, a syntax error) would
    fail every enrolment that reaches it: not reviewable, so an error, as `validate` says."""
    renderer = renderer_for(settings.templates_dir)
    renderer.fields = dict(fields_for(settings.workspace).types)
    errors = sorted({str(p) for p in template_problems(settings, renderer) if not p.warning})
    if errors:
        raise NurtureError("the workspace's emails cannot be sent: fix these first "
                           "(`nurture validate` lists every problem)\n" + "\n".join(errors))  # fmt: skip


def _flat(files: dict[str, dict[str, str]]) -> dict[str, str]:
    return {path: text for per_seq in files.values() for path, text in per_seq.items()}


def _shifted(p: Position, old: Catalog, new: Catalog, now: datetime) -> Position:
    """Where recording the new version puts someone (`versions.retimed`)."""
    a, b = old.get(p.sequence), new.get(p.sequence)
    was, will = (a.step(p.step_id) if a else None), (b.step(p.step_id) if b else None)
    return replace(p, due_at=retimed(p.due_at, p.waiting_for, was, will, now))


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _effect_of(
    p: Position, o: Outcome, n: Outcome, edited: set[tuple[str, str]]
) -> tuple[str, str, str] | None:
    """(step, kind, text) for one person, or None when nothing changes for them. A move
    is told by its shift; the dates are gathered by `_effects`."""
    if o.first == n.first and o.ends == n.ends:
        if o.sends != n.sends:
            return _later(o, n)
        if n.first and (p.sequence, n.first[0]) in edited:
            return (
                n.first[0],
                "template",
                f"whose next email ({n.first[0]}) uses the edited template",
            )
        return None
    if n.first is None:
        why = n.ends or "no email in sight"
        return p.step_id, "ends", f"waiting for {p.step_id} → their enrolment ends ({why})"
    if o.first is not None and o.first[0] == n.first[0]:
        shift = n.first[1] - o.first[1]
        way = "later" if shift > timedelta(0) else "earlier"
        return n.first[0], "moves", f"{format_duration(abs(shift))} {way}"
    skipped = [s for s in n.skipped if s not in o.skipped]
    if skipped:
        return (skipped[0], "skipped", f"who will now be skipped by the gate of {skipped[0]} "
                f"(their next email: {n.first[0]})")  # fmt: skip
    was = o.first[0] if o.first else "none"
    return n.first[0], "redirected", f"whose next email becomes {n.first[0]} (was {was})"


def _later(o: Outcome, n: Outcome) -> tuple[str, str, str]:
    """The first email within the horizon that ends, moves or comes, when the next one
    does not: someone who reaches a removed, delayed or new step within the week."""
    days = f"within {HORIZON.days} days"
    old_at, new_at = dict(reversed(o.sends)), dict(reversed(n.sends))  # each step's first
    for step in sorted(set(old_at) | set(new_at),
                       key=lambda s: min(old_at.get(s) or new_at[s], new_at.get(s) or old_at[s])):  # fmt: skip
        was, will = old_at.get(step), new_at.get(step)
        if was == will:
            continue
        if was is None:
            return step, "later", f"who now also get {step} {days}"
        if will is None:
            return step, "later", f"who reach {step} {days}: that email no longer comes {days}"
        shift = will - was
        way = "later" if shift > timedelta(0) else "earlier"
        return (step, "later", f"who reach {step} {days}: that email moves "
                f"{format_duration(abs(shift))} {way}")  # fmt: skip
    first = (n.sends or o.sends)[0][0]
    return first, "later", f"whose emails {days} change"


def _span(times: list[datetime]) -> str:
    first, last = _when(min(times)), _when(max(times))
    return first if first == last else f"between {first} and {last}"


def _effects(
    people: list[Position], before: dict[int, Outcome], after: dict[int, Outcome],
    found: list[Change],
) -> list[Effect]:  # fmt: skip
    """Person by person, grouped by what happens to them (a move: by step and shift)."""
    edited = {(c.sequence, str(c.step)) for c in found if c.kind == "template" and c.step}
    counts: Counter[tuple[str, str, str, str]] = Counter()
    dates: dict[tuple[str, str, str, str], tuple[list[datetime], list[datetime]]] = {}
    for p in people:
        o, n = before[p.enrollment_id], after[p.enrollment_id]
        effect = _effect_of(p, o, n, edited)
        if effect is None:
            continue
        key = (p.sequence, *effect)
        counts[key] += 1
        if effect[1] == "moves" and o.first and n.first:
            olds, news = dates.setdefault(key, ([], []))
            olds.append(o.first[1])
            news.append(n.first[1])
    out = []
    for key, count in sorted(counts.items()):
        seq, step, kind, text = key
        if kind == "moves":
            olds, news = dates[key]
            text = (f"whose next email ({step}) moves from {_span(olds)} to {_span(news)} "
                    f"({text})")  # fmt: skip
        out.append(Effect(seq, step, kind, count, f"{count} {text}"))
    return out


def _emails(
    people: list[Position], old: Catalog, new: Catalog, before: dict[int, Outcome],
    after: dict[int, Outcome],
) -> dict[str, dict[str, list[int]]]:  # fmt: skip
    """Emails per step over the horizon, before and after, every step of either version."""
    table: dict[str, dict[str, list[int]]] = {}
    for catalog in (old, new):
        for name, seq in sorted(catalog.sequences.items()):
            for step in seq.steps:
                table.setdefault(name, {}).setdefault(step.id, [0, 0])
    for p in people:
        for side, outcomes in ((0, before), (1, after)):
            for step_id, _ in outcomes[p.enrollment_id].sends:
                table.setdefault(p.sequence, {}).setdefault(step_id, [0, 0])[side] += 1
    return table
