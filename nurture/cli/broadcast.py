"""Newsletter commands: broadcast send / preview / list / status / cancel."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import click

from nurture import queue
from nurture.broadcast import core, fanout, operations
from nurture.broadcast.experiment import test_share_readers, test_share_warning
from nurture.broadcast.report import COLUMNS
from nurture.broadcast.source import Issue
from nurture.cli import cli, command, settings_of
from nurture.cli.content import echo_composed
from nurture.content.durations import parse_duration
from nurture.content.experiments import (
    DEFAULT_PICK_AFTER,
    DEFAULT_PICK_BY,
    PICK_BY,
    parse_share,
    percent,
)
from nurture.content.topics import topics_for
from nurture.people.segments import TERMS, issue_topic
from nurture.settings import Settings

T = TypeVar("T")
_SEGMENT_HELP = "\n".join(f"  {line}" for line in TERMS.values())


def _parsed(
    parse: Callable[[str], T],
) -> Callable[[click.Context, click.Parameter, str | None], T | None]:
    """A click callback turning the parser's ValueError into a usage error."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> T | None:
        try:
            return None if value is None else parse(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return callback


@cli.group("broadcast")
def broadcast() -> None:
    """Newsletters: write an issue in Markdown, test it, send or schedule it to a segment."""


def _when(settings: Settings, send_at: datetime | None, local_at: str | None) -> str:
    if local_at:
        return f"{datetime.fromisoformat(local_at):%a %Y-%m-%d %H:%M} in each reader's zone"
    if send_at is None:
        return "-"
    return (
        f"{send_at.astimezone(ZoneInfo(settings.timezone)):%a %Y-%m-%d %H:%M} {settings.timezone}"
    )


@command(
    broadcast,
    "send",
    epilog=f"\b\nSegment terms (join with and, or, not, parentheses):\n{_SEGMENT_HELP}",
)
@click.argument("source")
@click.option("--subject", help="Subject line (a Jinja string); wins over the front matter.")
@click.option(
    "--segment", metavar="EXPR", help="Who gets it, e.g. 'tag:customers and not tag:churned'."
)
@click.option(
    "--topic",
    metavar="NAME",
    help="The topic it belongs to (nurture.toml [topics]); readers who left it don't get "
    "it. Default: front matter, else newsletter.",
)
@click.option(
    "--at", "at", metavar="WHEN", help="'YYYY-MM-DD HH:MM' in NURTURE_TIMEZONE, or 'now'."
)
@click.option(
    "--local-time/--no-local-time",
    default=None,
    help="Send at WHEN's wall-clock time in each subscriber's own zone "
    "(default: front matter, else no).",
)
@click.option(
    "--archive/--no-archive",
    default=None,
    help="List the issue on the public /archive page (default: front matter, else no).",
)
@click.option(
    "--test-to",
    metavar="EMAIL",
    help="Send one copy to this subscriber, subject marked [TEST]; not counted.",
)
@click.option("--dry-run", is_flag=True, help="Print the audience and a sample; send nothing.")
@click.option("--test-share", metavar="PERCENT", callback=_parsed(parse_share),
              help="Send the front matter's variants to this share first (e.g. 20%), then "
              "the winner to the rest.")  # fmt: skip
@click.option("--pick-after", metavar="DURATION", callback=_parsed(parse_duration),
              help="How long after the start the winner is picked (default 4h).")  # fmt: skip
@click.option("--by", "pick_by", type=click.Choice(PICK_BY),
              help="What picks the winner: the best rate of opens, clicks (default) or "
              "conversions (the front matter's goal).")  # fmt: skip
@click.pass_context
def send(ctx: click.Context, source: str, subject: str | None, segment: str | None,
         topic: str | None, at: str | None, local_time: bool | None, archive: bool | None,
         test_to: str | None, dry_run: bool, test_share: float | None,
         pick_after: timedelta | None, pick_by: str | None) -> None:  # fmt: skip
    """Send SOURCE (a Markdown file with front matter, or a template name) to every
    active subscriber in the segment, now or at a time. With topics declared, readers
    who left its topic, or paused their emails, are left out (--dry-run says how many).

    Each subscriber gets it once, even if this command or a worker is stopped halfway:
    `nurture send-due` resumes the fan-out. A scheduled issue goes out at the first
    `send-due` after its time.

    An issue whose front matter lists `variants:` is an experiment named broadcast-ID:
    each reader gets one variant by the weights. With --test-share only that share gets
    the variants; the first `nurture send-due` after --pick-after picks the variant
    with the best rate --by opens, clicks or conversions and sends it to everyone else
    (see `nurture stats --experiment broadcast-ID`; `nurture experiment end
    broadcast-ID --keep B` picks by hand).

    \b
    Example:
      nurture broadcast send newsletters/2026-12-monthly.md --dry-run
      nurture broadcast send newsletters/2026-12-monthly.md --test-to me@crumb.example
      nurture broadcast send newsletters/2026-12-monthly.md --at '2026-12-08 09:00' --local-time
      nurture broadcast send newsletters/tips-01.md --topic tips --dry-run
      nurture broadcast send newsletters/subject-test.md --test-share 20% --pick-after 4h --by clicks
    """
    settings = settings_of(ctx)
    issue = operations.load_checked(settings, source, subject=subject, segment=segment,
                                    topic=topic, send_at=at, local_time=local_time,
                                    archive=archive, test_share=test_share,
                                    pick_after=pick_after, pick_by=pick_by)  # fmt: skip
    if dry_run:
        _dry_run(settings, issue)
    elif test_to:
        _test(settings, issue, test_to)
    else:
        _schedule(settings, issue)


def _dry_run(settings: Settings, issue: Issue) -> None:
    found = operations.dry_run(settings, issue)
    click.echo(f"Subject:  {issue.subject}")
    click.echo(f"Segment:  {issue.segment or 'all active subscribers'}")
    if topics_for(settings.workspace).on:
        click.echo(f"Topic:    {issue_topic(issue)} (readers who left it or pause are left out)")
    click.echo(f"Send at:  {_when(settings, found.send_at, found.local_at)}")
    left_out = (f"; left out: {found.left_topic:,} left the topic, {found.paused:,} paused"
                if found.left_topic or found.paused else "")  # fmt: skip
    click.echo(f"Audience: {found.size:,} subscribers (active, not suppressed){left_out}")
    if issue.variants:
        total = sum(v.weight for v in issue.variants)
        arms = ", ".join(f"{v.name} {percent(v.weight / total)}" for v in issue.variants)
        test = (f" to a {percent(issue.test_share)} test share, then the winner by "
                f"{issue.pick_by or DEFAULT_PICK_BY}" if issue.test_share else "")  # fmt: skip
        click.echo(f"Variants: {arms}{test}")
    if issue.variants and issue.test_share is not None:
        _echo_test_share(settings, issue, found.size, found.send_at)
    if found.sample:
        click.echo(f"Sample:   {', '.join(found.sample)}")
    click.echo("Dry run: nothing was saved or sent.")


def _echo_test_share(settings: Settings, issue: Issue, size: int, send_at: datetime) -> None:
    """The dry run's test share: its readers per variant, when the winner is picked."""
    readers, per_variant = test_share_readers(issue, size)
    each = ", ".join(f"{name} ~{n:.0f}" for name, n in per_variant.items())
    after = issue.pick_after or DEFAULT_PICK_AFTER
    click.echo(f"Test:     ~{readers:.0f} of {size:,} readers ({each}; by the hash of each "
               "address, so about)")  # fmt: skip
    click.echo(f"Winner:   by {issue.pick_by or DEFAULT_PICK_BY}, picked at the first "
               f"`nurture send-due` after {_when(settings, send_at + after, None)}, "
               "then sent to the rest")  # fmt: skip
    warning = test_share_warning(issue, size)
    if warning:
        click.echo(warning, err=True)


def _test(settings: Settings, issue: Issue, address: str) -> None:
    broadcast_id, email = operations.send_test_copy(settings, issue, address)
    click.echo(f"Test copy of draft #{broadcast_id} sent to {email} "
               "(subject marked [TEST]; not counted in the results).")  # fmt: skip


def _schedule(settings: Settings, issue: Issue) -> None:
    row = operations.schedule(settings, issue)
    warning = test_share_warning(issue, row.size)
    if warning:
        click.echo(warning, err=True)
    broadcast_id, when = row.broadcast_id, _when(settings, row.send_at, row.local_at)
    if not row.due:
        click.echo(f"Broadcast #{broadcast_id} scheduled for {when}, to {row.size:,} subscribers "
                   "as of now; `nurture send-due` sends it then.")  # fmt: skip
        if row.pick_at is not None:
            click.echo(f"Its winner goes to the rest after {_when(settings, row.pick_at, None)}.")
        return
    with click.progressbar(length=row.size, label=f"Broadcast #{broadcast_id}",
                           file=sys.stderr, show_pos=True) as bar:  # fmt: skip
        counts = fanout.fan_out_due_broadcasts(
            settings, queue.dispatch, broadcast_id, on_batch=bar.update
        )
    done = (f"{counts['sent']:,} sent" if settings.embedded
            else f"{counts['enqueued']:,} handed to the workers")  # fmt: skip
    later = f" ({when})" if issue.local_time else ""
    if row.pick_at is not None and issue.test_share is not None:
        later = (f" to the {percent(issue.test_share)} test share; the winner by "
                 f"{issue.pick_by or DEFAULT_PICK_BY} goes to the rest at the first "
                 f"`nurture send-due` after {_when(settings, row.pick_at, None)}")  # fmt: skip
    click.echo(f"Broadcast #{broadcast_id}: {counts['broadcast']:,} emails, {done}{later}. "
               f"Progress: nurture broadcast status {broadcast_id}")  # fmt: skip


@command(broadcast, "preview")
@click.argument("source")
@click.option("--subject", help="Subject line, for a template without front matter.")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="text",
              show_default=True, help="Which part to print; eml is the whole message.")  # fmt: skip
@click.option("--variant", help="Render this variant of an issue with `variants:`.")
@click.pass_context
def preview(
    ctx: click.Context, source: str, subject: str | None, fmt: str, variant: str | None
) -> None:
    """Render an issue for a sample subscriber, exactly as it would be sent.

    \b
    Example:
      nurture broadcast preview newsletters/2026-12-monthly.md --format html > issue.html
      nurture broadcast preview newsletters/december.md --variant B
    """
    echo_composed(operations.preview(settings_of(ctx), source, subject, variant), fmt)


@command(broadcast, "list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.pass_context
def list_(ctx: click.Context, limit: int) -> None:
    """The latest broadcasts, newest first, with how many emails went out.

    \b
    Example:
      $ nurture broadcast list
        id  state      send at                     sent/total  subject
         2  sending    Tue 2026-12-08 09:00 UTC    1,204/2,914  Marketing or sales?
    """
    settings = settings_of(ctx)
    rows = operations.latest(settings, limit)
    if not rows:
        click.echo("No broadcasts yet. Start with: nurture broadcast send FILE.md --dry-run")
        return
    click.echo(f"{'id':>4}  {'state':<10} {'send at':<40} {'sent/total':>11}  subject")
    for row, sent, total in rows:
        click.echo(f"{row.id:>4}  {row.state:<10} {_when(settings, row.send_at, row.local_at):<40} "
                   f"{f'{sent:,}/{total:,}':>11}  {row.subject}")  # fmt: skip


@command(broadcast, "status")
@click.argument("broadcast_id", metavar="ID", type=int)
@click.pass_context
def status(ctx: click.Context, broadcast_id: int) -> None:
    """Where one broadcast stands: its emails by state, opens, clicks and test copies.

    \b
    Example:
      nurture broadcast status 2
    """
    settings = settings_of(ctx)
    found = operations.status(settings, broadcast_id)
    row = found.broadcast
    click.echo(f"Broadcast #{row.id}: {row.subject}")
    click.echo(f"  state:    {row.state}")
    click.echo(f"  send at:  {_when(settings, row.send_at, row.local_at)}")
    click.echo(f"  segment:  {row.segment or 'all active subscribers'}")
    click.echo(f"  web:      {core.web_url(settings, row)}"
               + ("  (listed in the archive)" if row.archive else "  (not listed)"))  # fmt: skip
    if row.started_at is not None:
        progress = "done" if row.fanned_out_at else f"up to subscriber #{row.checkpoint}"
        click.echo(f"  fan-out:  {progress}")
    shown = [f"{found.counts[c]:,} {c}" for c in COLUMNS if found.counts.get(c)]
    click.echo(f"  emails:   {', '.join(shown)} ({found.total:,} in all)" if shown
               else "  emails:   none yet")  # fmt: skip
    sent = found.counts.get("sent", 0)
    if sent:
        click.echo(f"  opened:   {found.opened:,} people ({found.opened / sent:.0%}); "
                   f"clicked: {found.clicked:,} ({found.clicked / sent:.0%})")  # fmt: skip
    exp = found.experiment
    if exp is not None:
        click.echo(f"  experiment: {exp.line()}")
        if exp.ended is not None:
            click.echo(f"  winner:   {exp.ended.kept} ({exp.ended.how})")
        elif row.pick_at is not None:
            click.echo(f"  winner:   picked at the first `nurture send-due` after "
                       f"{_when(settings, row.pick_at, None)}")  # fmt: skip
        click.echo(f"  numbers:  nurture stats --experiment {exp.name}")
    for address, at, state in found.tests:
        when = f"{at:%Y-%m-%d %H:%M} UTC" if isinstance(at, datetime) else "-"
        click.echo(f"  test copy to {address}: {state} {when} (not counted)")


@command(broadcast, "cancel")
@click.argument("broadcast_id", metavar="ID", type=int)
@click.pass_context
def cancel(ctx: click.Context, broadcast_id: int) -> None:
    """Stop a broadcast: nothing more is sent; what already went out stays sent.

    \b
    Example:
      nurture broadcast cancel 2
    """
    stopped, sent = operations.cancel(settings_of(ctx), broadcast_id)
    click.echo(f"Broadcast #{broadcast_id} cancelled: {stopped:,} emails stopped, "
               f"{sent:,} already sent.")  # fmt: skip
