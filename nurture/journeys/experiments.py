"""Experiments in a workspace and its database: every one there is, which have ended
(and the variant everyone gets since), and ending one.

The experiments themselves are declared in files (`content/experiments.py` names
them); the database only records ends, in `experiment_ends`, one row per experiment,
so `send-due` on any host, `plan` and `simulate` read the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import make_url, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture import clock
from nurture.content.experiments import (
    HOLDOUT,
    Goal,
    IssueExperiment,
    did_you_mean,
    percent,
    step_experiment,
    variant_problem,
)
from nurture.content.sequences import Catalog, Sequence, catalog_for
from nurture.errors import NurtureError
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast, ExperimentEnd

#: The name of a broadcast's experiment.
BROADCAST_PREFIX = "broadcast-"


class ExperimentError(NurtureError):
    """An experiment that cannot be found or ended as asked."""


@dataclass(frozen=True)
class Ended:
    kept: str
    at: datetime
    how: str


@dataclass(frozen=True)
class Experiment:
    name: str
    #: step (a step's variants), holdout (a sequence's) or broadcast
    kind: str
    #: (variant, share of subscribers) in the order written; a holdout's are `holdout`
    #: and `mailed`.
    arms: tuple[tuple[str, float], ...]
    goal: Goal | None
    ended: Ended | None = None
    sequence: str | None = None
    step: str | None = None
    broadcast_id: int | None = None
    #: A broadcast's share that gets the variants first; None for everyone.
    test_share: float | None = None

    @property
    def variants(self) -> list[str]:
        return [name for name, _ in self.arms]

    def line(self) -> str:
        """'from-curious-to-customer.welcome: A 50%, B 50%, running' for lists."""
        arms = ", ".join(f"{n} {percent(s)}" for n, s in self.arms)
        if self.ended:
            state = f"ended {self.ended.at:%Y-%m-%d %H:%M} UTC: everyone gets {self.ended.kept}"
        else:
            state = "running"
        test = f" to a {percent(self.test_share)} test share" if self.test_share else ""
        return f"{self.name}: {arms}{test}, {state}"


def goal_of(seq: Sequence) -> Goal | None:
    """A sequence's conversion: its `goal:`, else the one event of its `exit_when:` (when
    it is an event a goal may be: not `bounced` or `complained`)."""
    if seq.goal is not None:
        return seq.goal
    events = seq.exit_when.event if seq.exit_when else ()
    try:
        return Goal(event=events[0]) if len(events) == 1 else None
    except ValueError:  # pydantic's ValidationError: not an event a goal may be
        return None


def ended(session: Session) -> dict[str, Ended]:
    """Every ended experiment by name: one small table, read whole."""
    rows = session.execute(select(ExperimentEnd.name, ExperimentEnd.kept, ExperimentEnd.at,
                                  ExperimentEnd.how))  # fmt: skip
    return {name: Ended(kept, at, how) for name, kept, at, how in rows}


def kept_variants(settings: Settings) -> dict[str, str]:
    """{experiment: kept variant} from the workspace's database, for `simulate` (which
    runs on a throw-away one); empty when the database does not exist yet, as
    `simulate` must not create it."""
    url = settings.database_url
    if url.startswith("sqlite:///") and not _sqlite_exists(url):
        return {}
    with session_scope(settings) as session:
        return {name: end.kept for name, end in ended(session).items()}


def _sqlite_exists(url: str) -> bool:
    path = make_url(url).database
    return not path or path == ":memory:" or Path(path).is_file()


def of_sequences(catalog: Catalog, ends: dict[str, Ended]) -> list[Experiment]:
    """The experiments the sequence files declare: holdouts, then steps' variants."""
    found = []
    for seq in sorted(catalog.sequences.values(), key=lambda s: s.name):
        goal = goal_of(seq)
        if seq.holdout is not None:
            held = ((HOLDOUT, seq.holdout), ("mailed", 1 - seq.holdout))
            found.append(Experiment(seq.name, "holdout", held, goal, None, seq.name))
        for step in seq.steps:
            if not step.variants:
                continue
            name = step_experiment(seq.name, step.id)
            total = sum(v.weight for v in step.variants)
            arms = tuple((v.name, v.weight / total) for v in step.variants)
            found.append(Experiment(name, "step", arms, goal, ends.get(name), seq.name, step.id))
    return found


def of_broadcast(row: Broadcast, ends: dict[str, Ended]) -> Experiment | None:
    if not row.experiment:
        return None
    trial = IssueExperiment.model_validate(row.experiment)
    name = f"{BROADCAST_PREFIX}{row.id}"
    total = sum(v.weight for v in trial.variants)
    arms = tuple((v.name, v.weight / total) for v in trial.variants)
    return Experiment(name, "broadcast", arms, trial.goal, ends.get(name),
                      broadcast_id=row.id, test_share=trial.test_share)  # fmt: skip


def every(session: Session, catalog: Catalog) -> list[Experiment]:
    """Every experiment of the workspace's files and of its broadcasts (newest last)."""
    ends = ended(session)
    rows = session.scalars(
        select(Broadcast).where(Broadcast.experiment.is_not(None)).order_by(Broadcast.id)
    )
    found = of_sequences(catalog, ends)
    found += [e for e in (of_broadcast(r, ends) for r in rows) if e is not None]
    return found


def find(session: Session, catalog: Catalog, name: str) -> Experiment:
    """The experiment called `name`; ExperimentError with the names there are."""
    known = every(session, catalog)
    found = next((e for e in known if e.name == name), None)
    if found is not None:
        return found
    names = [e.name for e in known]
    listed = f" (experiments: {', '.join(names)})" if names else (
        " (there are none: declare `variants:` on a step or `holdout:` on a sequence)")  # fmt: skip
    raise ExperimentError(f"no experiment named {name!r}{did_you_mean(name, names) or listed}")


def record_end(session: Session, exp: Experiment, keep: str, now: datetime, how: str) -> Ended:
    """Record that everyone gets `keep` from `now` on; ExperimentError when the variant
    is unknown or the experiment already ended (the first decision stands)."""
    if exp.kind == "holdout":
        raise ExperimentError(f"{exp.name} is the holdout of a sequence, not variants: remove "
                              "`holdout:` from its file to mail everyone")  # fmt: skip
    problem = variant_problem(exp.name, keep, exp.variants)
    if problem:
        raise ExperimentError(problem)
    if exp.ended is not None:
        raise ExperimentError(f"{exp.name} already ended on {exp.ended.at:%Y-%m-%d %H:%M} UTC, "
                              f"keeping {exp.ended.kept}")  # fmt: skip
    try:
        with session.begin_nested():
            session.add(ExperimentEnd(name=exp.name, kept=keep, at=now, how=how))
    except IntegrityError:  # ended at this very moment elsewhere
        raise ExperimentError(f"{exp.name} has just been ended elsewhere") from None
    return Ended(keep, now, how)


def end(settings: Settings, name: str, keep: str) -> tuple[Experiment, Ended]:
    """`nurture experiment end NAME --keep V`."""
    catalog = catalog_for(settings.sequences_dir)
    now = clock.now()
    with session_scope(settings) as session:
        exp = find(session, catalog, name)
        # a broadcast waiting for its test share's winner: send-due sends the rest now
        return exp, record_end(session, exp, keep, now, f"nurture experiment end --keep {keep}")


def listing(settings: Settings) -> list[Experiment]:
    catalog = catalog_for(settings.sequences_dir)
    with session_scope(settings) as session:
        return every(session, catalog)
