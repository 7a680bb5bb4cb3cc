"""Commands about people: subscribers add/list/show/import/export/forget, unsubscribe."""

from __future__ import annotations

import csv
import sys
from datetime import timedelta
from pathlib import Path

import click

from nurture import clock
from nurture.cli import cli, command, settings_of
from nurture.content.durations import parse_duration
from nurture.errors import NurtureError
from nurture.journeys.membership import (
    add_subscriber,
    forget_subscriber,
    import_parsed,
    read_import,
    set_fields,
    tag_subscriber,
    unsubscribe_subscriber,
    untag_subscriber,
)
from nurture.people.centre import choose_for_reader, sequence_topic
from nurture.reports.directory import (
    Card,
    export_columns,
    export_rows,
    list_subscribers,
    show_subscriber,
)
from nurture.settings import Settings


@cli.group("subscribers")
def subscribers() -> None:
    """Add, browse, import, export and forget subscribers."""


@command(subscribers, "add")
@click.argument("email")
@click.option("--first-name", help="Used in greetings.")
@click.option("--timezone", help="IANA zone, e.g. Europe/Paris.")
@click.option("--tag", "tags", multiple=True, help="A tag; repeat for more.")
@click.option("--attr", "attrs", multiple=True, metavar="NAME=VALUE",
              help="A declared field (nurture.toml [fields]); repeat for more.")  # fmt: skip
@click.option("--confirmed", is_flag=True,
              help="Consent was given elsewhere: activate and enrol now, no confirmation email.")  # fmt: skip
@click.pass_context
def subscribers_add(ctx: click.Context, email: str, first_name: str | None, timezone: str | None,
                    tags: tuple[str, ...], attrs: tuple[str, ...], confirmed: bool) -> None:  # fmt: skip
    """Add a subscriber: pending and sent a confirmation email, unless --confirmed.

    A tag starts its `trigger: tag:<name>` sequences once the subscriber is active.

    \b
    Example:
      nurture subscribers add ana@example.com --first-name Ana --tag bakery --confirmed
      nurture subscribers add ana@example.com --attr company="Crumb & Co" --attr city=Leeds
    """
    settings = settings_of(ctx)
    added = add_subscriber(settings, email, first_name=first_name, timezone=timezone,
                           tags=tags, attrs=attrs, confirmed=confirmed)  # fmt: skip
    if not added.created:
        click.echo(f"{added.email} is already a subscriber ({added.status})"
                   f"{'; tags and fields updated' if tags or attrs else ''}.")  # fmt: skip
        return
    if added.confirmations:
        from nurture.queue import dispatch  # the queue (Dramatiq) only when there is mail

        dispatch(settings, added.confirmations)
    if confirmed:
        click.echo(f"Added {added.email} (active). Run `nurture send-due` to send what is due.")
    else:
        click.echo(f"Added {added.email} (pending); a confirmation email is on its way.")


@command(subscribers, "list")
@click.option("--status", help="Only this status: pending, active, unsubscribed, bounced.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.pass_context
def subscribers_list(ctx: click.Context, status: str | None, limit: int) -> None:
    """List subscribers, newest first.

    \b
    Example:
      nurture subscribers list --status active
    """
    page = list_subscribers(settings_of(ctx), status, limit)
    click.echo(f"{'email':<36} {'status':<13} {'first name':<16} signed up")
    for s in page.rows:
        click.echo(f"{s.email:<36} {s.status:<13} {s.first_name or '':<16} "
                   f"{s.created_at:%Y-%m-%d %H:%M}")  # fmt: skip
    click.echo(f"{len(page.rows)} of {page.total} shown")


@command(subscribers, "show")
@click.argument("email")
@click.pass_context
def subscribers_show(ctx: click.Context, email: str) -> None:
    """One subscriber's whole journey: consent, enrolments and every email.

    \b
    Example:
      nurture subscribers show ana@example.com
    """
    card = show_subscriber(settings_of(ctx), email)
    click.echo(f"{card.email}  {card.status}")
    click.echo(f"  first name: {card.first_name or '-'}   time zone: {card.timezone or '-'}")
    click.echo(f"  tags: {', '.join(card.tags) or '-'}")
    click.echo(f"  fields: {', '.join(f'{k}={v}' for k, v in sorted(card.fields.items())) or '-'}")
    ready = (
        f"sales-ready since {card.ready_at:%Y-%m-%d %H:%M}" if card.ready_at else "not yet ready"
    )
    click.echo(f"  score: {card.score} ({ready})")
    click.echo(f"  signed up {card.created_at:%Y-%m-%d %H:%M} UTC via {card.source}")
    for line in card.sunsets:
        click.echo(f"  sunset: {line}")
    click.echo("consent:")
    for c in card.consents:
        click.echo(f"  {c.at:%Y-%m-%d %H:%M}  {c.action:<10} via {c.source}"
                   f"{'  (' + c.where + ')' if c.where else ''}")  # fmt: skip
        if c.wording and c.action == "requested":
            click.echo(f"      wording: {c.wording}")
        if c.topics:
            click.echo(f"      topics: {c.topics}")
    _echo_preferences(card)
    click.echo("enrolments:")
    rounds = {e.sequence for e in card.enrollments if e.round > 1}
    for e in card.enrollments:
        name = f"{e.sequence} (round {e.round})" if e.sequence in rounds else e.sequence
        click.echo(f"  {name:<28} {e.status:<10} {e.whereabouts()}")
    click.echo("emails:")
    for d in card.emails:
        extra = f"  ({d.error})" if d.error else ""
        click.echo(f"  {d.at:%Y-%m-%d %H:%M}  {d.status:<9} {d.what}  {d.subject or ''}{extra}")


def _echo_preferences(card: Card) -> None:
    """The reader's own choices, when they made any (preference centre)."""
    if card.topics_left or card.paused_until or card.reasons:
        click.echo("preferences:")
        click.echo(f"  topics left: {', '.join(card.topics_left) or '-'}")
    if card.paused_until:
        click.echo(f"  paused until {card.paused_until:%Y-%m-%d %H:%M} UTC")
    for at, kind, reason, text in card.reasons:
        words = f': "{text}"' if text else ""
        click.echo(f"  {at:%Y-%m-%d %H:%M}  {kind} because {reason}{words}")


@command(subscribers, "tag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
@click.pass_context
def subscribers_tag(ctx: click.Context, email: str, tags: tuple[str, ...]) -> None:
    """Add tags; a new tag can start a `trigger: tag:<name>` sequence or reach a goal.

    \b
    Example:
      nurture subscribers tag ana@example.com customer vip
    """
    tagged = tag_subscriber(settings_of(ctx), email, tags)
    if tagged.already:
        click.echo(f"{email} already had: {', '.join(tagged.already)} (nothing started)")
    click.echo(f"{email}: {', '.join(tagged.tags)}")


@command(subscribers, "untag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
@click.pass_context
def subscribers_untag(ctx: click.Context, email: str, tags: tuple[str, ...]) -> None:
    """Remove tags.

    \b
    Example:
      nurture subscribers untag ana@example.com vip
    """
    now_tags = untag_subscriber(settings_of(ctx), email, tags)
    click.echo(f"{email}: {', '.join(now_tags) or 'no tags'}")


@command(subscribers, "set")
@click.argument("email")
@click.argument("pairs", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.pass_context
def subscribers_set(ctx: click.Context, email: str, pairs: tuple[str, ...]) -> None:
    """Set declared fields (nurture.toml [fields]); NAME= with no value clears one.

    \b
    Example:
      nurture subscribers set ana@example.com plan=pro city=Leeds
    """
    address, now_set = set_fields(settings_of(ctx), email, pairs)
    click.echo(f"{address}: {', '.join(f'{k}={v}' for k, v in now_set.items())}")


@command(subscribers, "export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.pass_context
def subscribers_export(ctx: click.Context, file: Path | None) -> None:
    """Export every subscriber as CSV (to FILE, or standard output).

    \b
    Example:
      nurture subscribers export everyone.csv
    """
    settings = settings_of(ctx)
    count = 0
    out = file.open("w", newline="", encoding="utf-8") if file else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(export_columns(settings))
        for row in export_rows(settings):
            writer.writerow(row)
            count += 1
    finally:
        if file:
            out.close()
    if file:
        click.echo(f"Exported {count} subscribers to {file}.")


@command(subscribers, "import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--confirmed", is_flag=True,
              help="Consent was given elsewhere: activate and enrol (source 'import').")  # fmt: skip
@click.pass_context
def subscribers_import(ctx: click.Context, file: Path, confirmed: bool) -> None:
    """Bulk import from CSV with columns email, first_name, timezone, tags, and any
    field declared in nurture.toml [fields] (one column each).

    Bad rows are reported by line and skipped; blank rows are skipped; good rows are
    kept. Without --confirmed each new address is pending and sent a confirmation email.
    A known address gets the file's new tags and fields, nothing else.

    \b
    Example:
      nurture subscribers import customers.csv --confirmed
    """
    settings = settings_of(ctx)
    parsed = read_import(settings, file)
    if sys.stderr.isatty():
        with click.progressbar(length=len(parsed.lines), label="Importing", file=sys.stderr) as bar:
            outcome = import_parsed(settings, file, parsed, confirmed=confirmed,
                                    progress=bar.update)  # fmt: skip
    else:  # a pipe or a log file: a bar's carriage returns would be noise (or a bare label)
        outcome = import_parsed(settings, file, parsed, confirmed=confirmed)
    for problem in outcome.problems:
        click.echo(problem, err=True)
    if outcome.confirmations:
        from nurture.queue import dispatch  # the queue (Dramatiq) only when there is mail

        dispatch(settings, outcome.confirmations)
    click.echo(f"Imported {outcome.added} new, {outcome.known} already known, "
               f"{len(outcome.problems)} bad rows.")  # fmt: skip


@command(subscribers, "forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def subscribers_forget(ctx: click.Context, email: str, yes: bool) -> None:
    """Erase a subscriber and their history (GDPR); the address stays suppressed.

    \b
    Example:
      nurture subscribers forget ana@example.com --yes
    """
    if not yes:
        click.confirm(f"Erase everything about {email}?", abort=True)
    forget_subscriber(settings_of(ctx), email)
    click.echo(f"Forgot {email}; the address is suppressed and will never be mailed again.")


@command(cli, "unsubscribe")
@click.argument("email")
@click.option("--sequence", help="Only leave this sequence (the reader stays in its topic).")
@click.option("--topic", "topics", multiple=True, metavar="NAME",
              help="Only leave this topic (repeat for more): its sequences end, its queued "
                   "emails are cancelled, as in the preference centre.")  # fmt: skip
@click.option("--pause", "pause_for", metavar="DURATION",
              help="Hold every email for this long (e.g. 30d), as the preference centre's "
                   "pause does.")  # fmt: skip
@click.pass_context
def unsubscribe_cmd(
    ctx: click.Context, email: str, sequence: str | None, topics: tuple[str, ...],
    pause_for: str | None,
) -> None:  # fmt: skip
    """Unsubscribe at once: nothing more is sent, even what is already queued.

    With --topic or --pause (topics on, docs/topics.md), make instead the change a reader
    who phones in asks for, as the preference centre would: recorded in the consent
    ledger with source cli and on their timeline. --sequence leaves one sequence only;
    the reader stays in its topic.

    \b
    Examples:
      nurture unsubscribe ana@example.com
      nurture unsubscribe ana@example.com --topic tips
      nurture unsubscribe ana@example.com --pause 30d
    """
    settings = settings_of(ctx)
    if topics or pause_for:
        if sequence:
            raise NurtureError("give --sequence alone, or --topic/--pause without it")
        _leave_some(settings, email, topics, pause_for)
        return
    unsubscribe_subscriber(settings, email, sequence)
    click.echo(f"Unsubscribed {email}{' from ' + sequence if sequence else ''}.")
    topic = sequence_topic(settings, sequence) if sequence else None
    if topic is not None:
        click.echo(f"They stay in the topic '{topic}': its newsletters and other sequences "
                   f"still reach them. To leave it: nurture unsubscribe {email} --topic {topic}")  # fmt: skip


def _leave_some(
    settings: Settings, email: str, topics: tuple[str, ...], pause_for: str | None
) -> None:
    try:
        held = parse_duration(pause_for) if pause_for else None
    except ValueError as e:
        raise NurtureError(f"--pause: {e}") from None
    if held is not None and held <= timedelta(0):
        raise NurtureError("--pause: give a duration longer than zero, like 30d")
    done = choose_for_reader(settings, email, clock.now(), leave=topics, pause_for=held)
    for topic in topics:
        said = "left" if topic in done.left else "had already left"
        click.echo(f"{email} {said} the topic '{topic}'.")
    if done.paused_until is not None:
        click.echo(f"Paused {email} until {done.paused_until:%Y-%m-%d %H:%M} UTC.")
