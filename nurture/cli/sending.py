"""Commands that send or report on sending: send-due, stats."""

from __future__ import annotations

from pathlib import Path

import click

from nurture import clock
from nurture.cli import cli, command, settings_of
from nurture.cli.experiments import echo_report
from nurture.delivery.compose import sender_for
from nurture.queue import broker_status
from nurture.reports.deliverability import Deliverability
from nurture.reports.experiments import report
from nurture.reports.html import write_report
from nurture.reports.overview import overview
from nurture.reports.stats import COLUMNS
from nurture.send_due import run_send_due, summary


@command(cli, "send-due")
@click.option("--limit", type=click.IntRange(min=1), help="Claim at most this many steps.")
@click.pass_context
def send_due(ctx: click.Context, limit: int | None) -> None:
    """Claim every step due now, write its delivery and enqueue it.

    In embedded mode (no NURTURE_REDIS_URL) the emails are also sent before the command
    exits. Safe to run from cron on many hosts at once: no step is sent twice.

    cron runs it with almost no environment and no shell profile: give the absolute path
    of the command, the workspace, and a file with the settings (secrets included, mode
    0600) that the command reads itself.

    \b
    Example (crontab):
      * * * * *  /srv/crumb/.venv/bin/nurture --workspace /srv/crumb --env-file /etc/nurture.env send-due
    """
    settings = settings_of(ctx)
    sender_for(settings)  # fail before claiming anything if there is no sender
    counts = run_send_due(settings, limit)
    click.echo(summary(counts, settings.embedded))


def _deliverability(found: Deliverability | None) -> None:
    """Bounce and complaint rates, and the 30-day complaint warning."""
    if found is None:
        return
    if any(r.bounced or r.complained for r in found.rates):
        click.echo("\nbounces and complaints (of emails sent)")
        for rate in found.rates:
            click.echo(rate.line())
    if found.warning:
        click.echo(found.warning)


@command(cli, "stats")
@click.argument("sequence", required=False)
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a report with a funnel chart to this file instead.")  # fmt: skip
@click.option("--experiment", metavar="NAME", help="Instead, one experiment's variants: sent, "
              "opened, clicked, converted, and their differences with 95% intervals "
              "(names: `nurture experiment list`).")  # fmt: skip
@click.pass_context
def stats(
    ctx: click.Context, sequence: str | None, html_file: Path | None, experiment: str | None
) -> None:
    """Per step: emails sent, pending, failed, skipped, cancelled, and the people who
    opened, clicked, unsubscribed or bounced; per sequence, the funnel from education
    to sales (entered, finished education, became ready, got sales prompts, reached
    the goal) and the sales handoffs. With --html, the report goes to that file instead.

    Then the deliveries in transit: queued, sending, waiting to retry; `stuck` ones were
    left mid-send by a worker that was lost (the next send-due takes them back), and of
    those ever taken back, how many were never sent and how many may have been sent
    twice. With a [sunset] policy, how many people are in the win-back, were won back,
    unsubscribed as inactive or get no newsletters. Last, the broker and its queue depth.

    With --experiment NAME, one experiment instead: per variant the emails sent and how
    many were opened (bots left out), clicked and followed by the goal event, then each
    variant against the first with a 95% confidence interval; for a sequence with a
    holdout, the lift of the whole sequence over the people it held out.

    \b
    Examples:
      nurture stats from-curious-to-customer --html report.html
      nurture stats --experiment from-curious-to-customer.welcome
    """
    settings = settings_of(ctx)
    if experiment is not None:
        echo_report(report(settings, experiment))
        return
    found = overview(settings, sequence)
    if html_file:
        write_report(html_file, found.funnels, found.steps, found.handoffs, clock.now(),
                     found.scores)  # fmt: skip
        click.echo(f"Wrote the report to {html_file}.")
        return
    current = None
    for row in found.steps:
        if row.sequence != current:
            current = row.sequence
            click.echo(f"\n{current}")
            click.echo(f"  {'step':<26} {'stage':<10}" + "".join(f"{c:>13}" for c in COLUMNS))
        click.echo(f"  {row.step_id:<26} {row.stage:<10}"
                   + "".join(f"{row.counts.get(c, 0):>13}" for c in COLUMNS))  # fmt: skip
    for f, score in zip(found.funnels, found.scores, strict=True):
        click.echo(
            f"\n{f.sequence} funnel: " + " -> ".join(f"{label} {n}" for label, n in f.stages())
        )
        if score is not None:
            click.echo(score.line())
    if found.handoffs:
        failing = found.handoffs.get("failed", 0) + found.handoffs.get("retry", 0)
        click.echo("sales handoffs: "
                   + ", ".join(f"{n} {k}" for k, n in sorted(found.handoffs.items()))
                   + (f"  ({failing} failing: check NURTURE_SALES_WEBHOOK_URL)" if failing else ""))  # fmt: skip
    _deliverability(found.deliverability)
    if found.sunset or settings.sunset:
        said = ", ".join(f"{n} {words}" for words, n in (found.sunset or {}).items())
        click.echo(f"\nsunset: {said or 'nobody found inactive yet'}")
    click.echo(f"\n{found.health.line()}")
    click.echo(f"broker: {broker_status(settings)}")
