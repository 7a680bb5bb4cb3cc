"""`nurture sunset`: the `[sunset]` policy of nurture.toml now, or a dry run of it."""

from __future__ import annotations

import json
from datetime import datetime

import click

from nurture import clock
from nurture.cli import cli, command, settings_of
from nurture.people.sunsetrun import SunsetRun, run_sunset


def _day(at: datetime | None) -> str:
    return at.date().isoformat() if at else "never"


def _json(run: SunsetRun, dry_run: bool) -> str:
    policy = run.policy
    return json.dumps({
        "dry_run": dry_run,
        "policy": {"inactive_for_days": policy.inactive_for.total_seconds() / 86400,
                   "winback": policy.winback, "then": policy.then,
                   "grace_days": policy.grace.total_seconds() / 86400},
        "counts": {name: getattr(run.counts, name)
                   for name in ("winback", "won_back", "unsubscribed", "stopped", "left")},
        "affected": [{"email": a.email, "action": a.action,
                      "last_engaged": a.last_engaged.isoformat() if a.last_engaged else None,
                      "joined": a.joined.isoformat()} for a in run.affected],
    }, indent=2)  # fmt: skip


@command(cli, "sunset")
@click.option("--dry-run", is_flag=True,
              help="Show who would go into the win-back, be won back, unsubscribed or stopped; "
              "change nothing.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json for tools (with --dry-run it lists everyone).")  # fmt: skip
@click.pass_context
def sunset(ctx: click.Context, dry_run: bool, fmt: str) -> None:
    """Apply the [sunset] policy now: the silent get the win-back, then leave.

    A subscriber with no open and no click (bots' aside) for `inactive_for`, counted
    from their last one or from when they confirmed, is put in the `winback` sequence
    (send-due sends its emails); an open or a click wins them back. Still silent
    `grace` after its last email, they are unsubscribed with reason "inactive" (then =
    "unsubscribe") or get no more newsletters while their sequences go on (then =
    "stop_broadcasts"). send-due applies the policy on every run, looking for the newly
    inactive once an hour; this command applies all of it at once, or with --dry-run
    shows whom it would move and changes nothing.

    \b
    Example (nurture.toml):
      [sunset]
      inactive_for = "120d"
      winback = "win-back"
      then = "unsubscribe"
    \b
    Example:
      nurture sunset --dry-run
      nurture sunset --dry-run --format json > sunset.json
      nurture sunset
    """
    run = run_sunset(settings_of(ctx), clock.now(), dry_run=dry_run)
    if fmt == "json":
        click.echo(_json(run, dry_run))
        return
    click.echo(f"policy: {run.policy.describe()}")
    said = ", ".join(run.counts.parts())
    if not dry_run:
        click.echo(f"sunset: {said or 'nobody to move'}")
        return
    click.echo(f"dry run, nothing changed; {'it would move ' + said if said else 'nobody to move'}")
    if run.affected:
        click.echo(f"{'email':<40} {'action':<16} {'last open/click':<16} joined")
    for row in run.affected:
        click.echo(f"{row.email:<40} {row.action:<16} {_day(row.last_engaged):<16} "
                   f"{_day(row.joined)}")  # fmt: skip
