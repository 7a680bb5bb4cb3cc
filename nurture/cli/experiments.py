"""Experiments: list them, end one keeping a variant; `stats --experiment` prints one."""

from __future__ import annotations

import click

from nurture.cli import cli, command, settings_of
from nurture.content.experiments import percent
from nurture.journeys.experiments import end as end_experiment
from nurture.journeys.experiments import listing
from nurture.reports.experiments import MIN_SUCCESSES, MIN_TRIALS, Difference, Report

_NAMES = """\
Experiment names: SEQUENCE.STEP for a step's variants, SEQUENCE for a sequence's
holdout, broadcast-ID for a newsletter issue's variants."""


@cli.group("experiment", epilog=_NAMES)
def experiment() -> None:
    """A/B tests and holdouts: list them, end one keeping the winner."""


@command(experiment, "list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Every experiment of the sequences and broadcasts: its variants and their shares,
    and whether it still runs or which variant everyone gets since it ended.

    \b
    Example:
      $ nurture experiment list
      from-curious-to-customer: holdout 10%, mailed 90%, running
      from-curious-to-customer.welcome: A 50%, B 50%, running
    """
    found = listing(settings_of(ctx))
    if not found:
        click.echo("No experiments: declare `variants:` on a step or `holdout:` on a sequence "
                   "(see README, Experiments).")  # fmt: skip
    for exp in found:
        click.echo(exp.line())


@command(experiment, "end", epilog=_NAMES)
@click.argument("name")
@click.option("--keep", required=True, metavar="VARIANT", help="The variant everyone gets now.")
@click.pass_context
def end(ctx: click.Context, name: str, keep: str) -> None:
    """End experiment NAME: from now on everyone gets the --keep variant.

    The end is recorded in the database, so every send-due host and worker sends the
    kept variant, `nurture plan` lists the experiment as ended and `nurture simulate`
    shows the kept variant. `nurture stats --experiment NAME` still compares the
    variants on the emails sent while it ran. For a broadcast waiting for its test
    share's winner, the rest of its audience gets the kept variant at the next send-due.

    \b
    Example:
      nurture stats --experiment from-curious-to-customer.welcome
      nurture experiment end from-curious-to-customer.welcome --keep B
    """
    exp, done = end_experiment(settings_of(ctx), name, keep)
    rest = (f" The rest of broadcast #{exp.broadcast_id}'s audience gets it at the next "
            "`nurture send-due`." if exp.broadcast_id is not None else "")  # fmt: skip
    click.echo(f"{exp.name} ended: everyone gets {done.kept} from now on.{rest}")


def _rate(count: int | None, of: int) -> str:
    if count is None:
        return f"{'-':>13}"
    shown = f"{count / of:.1%}" if of else "-"
    return f"{count:>6} {shown:>6}"


def _verdict(d: Difference) -> str:
    if not d.enough:
        return (f"too few to tell (each side needs {MIN_TRIALS}+, of them "
                f"{MIN_SUCCESSES}+ {d.metric} and {MIN_SUCCESSES}+ not)")  # fmt: skip
    if d.clear:
        return f"{d.variant} {'better' if d.diff > 0 else 'worse'}"
    return "no clear difference yet"


def _points(d: Difference) -> str:
    verdict = _verdict(d)
    return (f"{d.diff * 100:+6.1f}  [{d.low * 100:+.1f}, {d.high * 100:+.1f}]  "
            f"{verdict}")  # fmt: skip


def _people(people: int, converted: int, found: Report) -> str:
    if not people or found.goal is None:
        return f"{people} people"
    return f"{people} people, {converted} converted ({converted / people:.1%})"


def echo_report(found: Report) -> None:
    """`nurture stats --experiment NAME` as text."""
    exp = found.experiment
    what = {"step": f"variants of step {exp.step} in {exp.sequence}",
            "holdout": f"the holdout of sequence {exp.sequence}",
            "broadcast": f"variants of broadcast #{exp.broadcast_id}"}[exp.kind]  # fmt: skip
    state = (f"ended {exp.ended.at:%Y-%m-%d %H:%M} UTC, {exp.ended.how}: everyone gets "
             f"{exp.ended.kept}" if exp.ended else "running")  # fmt: skip
    click.echo(f"Experiment {exp.name} ({what}): {state}")
    click.echo("Goal: " + (found.goal.describe() if found.goal else
               "none declared, so no conversions (add e.g. `goal: {event: purchased}`)"))  # fmt: skip
    if found.arms:
        click.echo(f"\n  {'variant':<12}{'share':>6}{'sent':>8}{'opened':>14}{'clicked':>14}"
                   f"{'converted':>14}")  # fmt: skip
        for arm in found.arms:
            click.echo(f"  {arm.name:<12}{percent(arm.share):>6}{arm.sent:>8} "
                       f"{_rate(arm.opened, arm.sent)} {_rate(arm.clicked, arm.sent)} "
                       f"{_rate(arm.converted, arm.sent)}")  # fmt: skip
        if found.after_end:
            click.echo(f"  (and {found.after_end} sent {exp.ended.kept if exp.ended else ''} "
                       "since it ended: not compared)")  # fmt: skip
    for versus in dict.fromkeys(d.versus for d in found.differences):
        click.echo("\nDifference in percentage points, with its 95% confidence interval "
                   f"(two proportions, normal approximation), against {versus}:")  # fmt: skip
        for d in (d for d in found.differences if d.versus == versus):
            click.echo(f"  {d.variant:<12}{d.metric:<11}{_points(d)}")
    lift = found.lift
    if lift is not None:
        held = _people(lift.held, lift.held_converted, found)
        mailed = _people(lift.mailed, lift.mailed_converted, found)
        click.echo(f"\nHoldout of {exp.sequence}: {held}; mailed: {mailed}")
        if lift.difference is not None:
            click.echo(f"Lift of the sequence (mailed − holdout): {_points(lift.difference)}")
