"""A newsletter issue's experiment: which variant each reader gets, the test share that
gets the variants first, and the winner picked for the rest.

    sending: the test share's emails, each reader the variant their address picks
      --pick_at, at the first `send-due` after--> the winner is recorded
      (`experiment_ends`), the fan-out starts again from the first subscriber, and
      everyone without an email yet gets the winner --> sent

Without a test share every reader gets a variant by the weights at once. The winner is
the variant whose test emails have the highest rate of opens, clicks or conversions
(`journeys/results.py`; the first listed on a tie). `nurture experiment end
broadcast-ID --keep B` decides it by hand, earlier or instead; either way, from then on
each new email is the kept variant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.broadcast.source import Issue
from nurture.content.experiments import IssueExperiment, in_test_share, percent, pick
from nurture.journeys.experiments import BROADCAST_PREFIX, ended, of_broadcast, record_end
from nurture.journeys.results import ArmStats, arm_stats
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast, BroadcastState, ExperimentEnd

log = logging.getLogger(__name__)

#: `--by` as the metric `journeys/results.py` counts.
METRIC = {"opens": "opened", "clicks": "clicked", "conversions": "converted"}
#: What `variant_for` answers for a reader outside the test share before the pick.
LATER = ""


def name_of(broadcast_id: int) -> str:
    return f"{BROADCAST_PREFIX}{broadcast_id}"


def trial_of(broadcast: Broadcast) -> IssueExperiment | None:
    return IssueExperiment.model_validate(broadcast.experiment) if broadcast.experiment else None


def chooser(session: Session, broadcast: Broadcast) -> Callable[[str], str | None]:
    """For the fan-out: a reader's address -> their variant, None when the issue has no
    variants, or LATER for a reader who waits for the test share's winner."""
    trial = trial_of(broadcast)
    if trial is None:
        return lambda _email: None
    name = name_of(broadcast.id)
    kept = session.scalar(select(ExperimentEnd.kept).where(ExperimentEnd.name == name))
    if kept is not None:
        return lambda _email: kept
    share = trial.test_share

    def variant_for(email: str) -> str | None:
        if share is not None and not in_test_share(email, name, share):
            return LATER
        return pick(trial.variants, email, name)

    return variant_for


def pick_due(settings: Settings, now: datetime) -> list[int]:
    """Broadcasts whose test share's winner is due (or was kept by hand) get it recorded
    and their fan-out started again for the rest; returns their ids. What `send-due`
    does, once per run."""
    picked = []
    with session_scope(settings) as session:
        rows = session.scalars(
            select(Broadcast)
            .where(Broadcast.state == BroadcastState.SENDING, Broadcast.pick_at.is_not(None),
                   Broadcast.fanned_out_at.is_not(None))
            .order_by(Broadcast.id)
            .with_for_update(skip_locked=True)
        ).all()  # fmt: skip
        ends = ended(session)
        for row in rows:
            exp = of_broadcast(row, ends)
            trial = trial_of(row)
            assert row.pick_at is not None and exp is not None and trial is not None
            if exp.ended is None:
                if row.pick_at > now:
                    continue
                arms, _ = arm_stats(session, exp, trial.goal)
                winner, how = winner_of(arms, trial)
                record_end(session, exp, winner, now, how)
            row.pick_at, row.checkpoint, row.fanned_out_at = None, 0, None
            picked.append(row.id)
    return picked


def winner_of(arms: list[ArmStats], trial: IssueExperiment) -> tuple[str, str]:
    """(the variant with the best rate by `trial.pick_by`, how it was picked)."""
    metric = METRIC[trial.pick_by]

    def rate(arm: ArmStats) -> float:
        return (arm.count(metric) or 0) / arm.sent if arm.sent else 0.0

    share = percent(trial.test_share) if trial.test_share else "all"
    if not any(a.sent for a in arms):  # nothing to compare: say so, never "picked" on 0 of 0
        log.warning("broadcast test share %s reached no reader: %s, the first variant, "
                    "goes to everyone unpicked", share, arms[0].name)  # fmt: skip
        return arms[0].name, (f"not picked: the {share} test share reached no reader, so "
                              f"{arms[0].name}, the first variant, went to everyone")  # fmt: skip
    best = max(arms, key=rate)  # the first of equals: max keeps the first it saw
    shown = ", ".join(f"{a.name} {rate(a):.1%} ({a.count(metric) or 0} of {a.sent})"
                      for a in arms)  # fmt: skip
    return best.name, f"picked by {trial.pick_by} of the {share} test share: {shown}"


def test_share_readers(issue: Issue, audience: int) -> tuple[float, dict[str, float]]:
    """(readers expected in the issue's test share of `audience`, and per variant by the
    weights): the share is drawn by a hash of each address, so these are expectations."""
    readers = (issue.test_share or 0.0) * audience
    total = sum(v.weight for v in issue.variants)
    return readers, {v.name: readers * v.weight / total for v in issue.variants}


def test_share_warning(issue: Issue, audience: int) -> str | None:
    """A warning when the test share is too small for a variant to expect a reader: the
    winner is then picked on nothing, and the first variant wins a tie of nothing."""
    if issue.test_share is None or not issue.variants:
        return None
    readers, per_variant = test_share_readers(issue, audience)
    empty = [name for name, n in per_variant.items() if n < 1]
    if not empty:
        return None
    which = ", ".join(empty)
    return (f"warning: variant{'s' if len(empty) > 1 else ''} {which} "
            f"{'get' if len(empty) > 1 else 'gets'} no reader in a "
            f"{percent(issue.test_share)} test share of {audience:,} (about {readers:.1f} "
            f"readers for {len(issue.variants)} variants): the first variant wins by default; "
            "raise --test-share or send without one")  # fmt: skip
