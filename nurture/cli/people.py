"""Commands about people: subscribers add/list/show/import/export/forget, unsubscribe."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
from sqlalchemy import delete, func, select

from nurture import clock
from nurture.cli import _settings, cli, command
from nurture.content.fields import fields_for, parse_pairs
from nurture.content.sequences import catalog_for
from nurture.people.activity import on_tag
from nurture.people.engagement import live_score
from nurture.people.importing import import_rows, read_rows
from nurture.people.subscribers import (
    ConsentInfo,
    add,
    add_tags,
    forget,
    get,
    set_attributes,
    tags_of,
    unsubscribe,
)
from nurture.people.tags import clean_tags
from nurture.queue import dispatch
from nurture.store.engine import session_scope
from nurture.store.tables import Consent, Delivery, Enrollment, Subscriber, Tag


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
    settings = _settings(ctx)
    catalog = catalog_for(settings.sequences_dir)
    attributes = fields_for(settings.workspace).values(parse_pairs(attrs))
    with session_scope(settings) as session:
        sub, created = add(session, catalog, email, clock.now(), first_name=first_name,
                           timezone=timezone, tags=list(tags), confirmed=confirmed,
                           consent=ConsentInfo(source="cli"), attributes=attributes)  # fmt: skip
        status = sub.status
        confirmation = session.scalars(
            select(Delivery.id).where(Delivery.subscriber_id == sub.id,
                                      Delivery.kind == "confirm", Delivery.status == "queued")
        ).all()  # fmt: skip
    if not created:
        click.echo(f"{sub.email} is already a subscriber ({status})"
                   f"{'; tags and fields updated' if tags or attrs else ''}.")  # fmt: skip
        return
    dispatch(settings, confirmation)
    if confirmed:
        click.echo(f"Added {sub.email} (active). Run `nurture send-due` to send what is due.")
    else:
        click.echo(f"Added {sub.email} (pending); a confirmation email is on its way.")


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
    with session_scope(_settings(ctx)) as session:
        query = select(Subscriber).order_by(Subscriber.created_at.desc(), Subscriber.id.desc())
        if status:
            query = query.where(Subscriber.status == status)
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        subs = session.scalars(query.limit(limit)).all()
        click.echo(f"{'email':<36} {'status':<13} {'first name':<16} signed up")
        for s in subs:
            click.echo(f"{s.email:<36} {s.status:<13} {s.first_name or '':<16} "
                       f"{s.created_at:%Y-%m-%d %H:%M}")  # fmt: skip
        click.echo(f"{len(subs)} of {total} shown")


@command(subscribers, "show")
@click.argument("email")
@click.pass_context
def subscribers_show(ctx: click.Context, email: str) -> None:
    """One subscriber's whole journey: consent, enrolments and every email.

    \b
    Example:
      nurture subscribers show ana@example.com
    """
    settings = _settings(ctx)
    with session_scope(settings) as session:
        sub = get(session, email)
        score = live_score(session, sub.id, catalog_for(settings.sequences_dir))
        click.echo(f"{sub.email}  {sub.status}")
        click.echo(f"  first name: {sub.first_name or '-'}   time zone: {sub.timezone or '-'}")
        click.echo(f"  tags: {', '.join(tags_of(session, sub.id)) or '-'}")
        shown = {k: v for k, v in (sub.attributes or {}).items() if k in fields_for(
            _settings(ctx).workspace).types}  # fmt: skip
        click.echo(f"  fields: {', '.join(f'{k}={v}' for k, v in sorted(shown.items())) or '-'}")
        ready = (
            f"sales-ready since {sub.ready_at:%Y-%m-%d %H:%M}" if sub.ready_at else "not yet ready"
        )
        click.echo(f"  score: {score} ({ready})")
        click.echo(f"  signed up {sub.created_at:%Y-%m-%d %H:%M} UTC via {sub.source}")
        click.echo("consent:")
        for c in session.scalars(select(Consent).where(Consent.subscriber_id == sub.id)
                                 .order_by(Consent.at, Consent.id)):  # fmt: skip
            where = ", ".join(x for x in (c.ip, c.form, c.user_agent) if x)
            click.echo(f"  {c.at:%Y-%m-%d %H:%M}  {c.action:<10} via {c.source}"
                       f"{'  (' + where + ')' if where else ''}")  # fmt: skip
            if c.wording and c.action == "requested":
                click.echo(f"      wording: {c.wording}")
        click.echo("enrolments:")
        enrollments = session.scalars(
            select(Enrollment).where(Enrollment.subscriber_id == sub.id)
            .order_by(Enrollment.enrolled_at, Enrollment.id)
        ).all()  # fmt: skip
        rounds = {e.sequence for e in enrollments if e.round > 1}
        for e in enrollments:
            name = f"{e.sequence} (round {e.round})" if e.sequence in rounds else e.sequence
            click.echo(f"  {name:<28} {e.status:<10} {_whereabouts(e)}")
        click.echo("emails:")
        for d in session.scalars(select(Delivery).where(Delivery.subscriber_id == sub.id)
                                 .order_by(Delivery.id)):  # fmt: skip
            when = d.sent_at or d.created_at
            what = f"{d.sequence}/{d.step_id}" if d.kind == "sequence" else d.kind
            extra = f"  ({d.error})" if d.error else ""
            click.echo(f"  {when:%Y-%m-%d %H:%M}  {d.status:<9} {what}  "
                       f"{d.subject or ''}{extra}")  # fmt: skip


def _whereabouts(e: Enrollment) -> str:
    """Where an enrolment stands, and why its next step waits when something holds it."""
    if e.ended_at:
        return f"ended {e.ended_at:%Y-%m-%d %H:%M}: {e.end_reason}"
    if e.next_due_at is None:
        return f"next: {e.next_step_id} (being sent)"
    why = f" ({e.waiting_for})" if e.waiting_for else ""
    return f"next: {e.next_step_id} at {e.next_due_at:%Y-%m-%d %H:%M}{why}"


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
    settings = _settings(ctx)
    with session_scope(settings) as session:
        sub = get(session, email)
        add_tags(session, sub.id, list(tags))
        on_tag(session, settings, sub.id, clean_tags(tags), clock.now())
        now_tags = tags_of(session, sub.id)
    click.echo(f"{email}: {', '.join(now_tags)}")


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
    with session_scope(_settings(ctx)) as session:
        sub = get(session, email)
        session.execute(delete(Tag).where(Tag.subscriber_id == sub.id,
                                          Tag.name.in_([t.strip().lower() for t in tags])))  # fmt: skip
        now_tags = tags_of(session, sub.id)
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
    settings = _settings(ctx)
    values = fields_for(settings.workspace).values(parse_pairs(pairs))
    with session_scope(settings) as session:
        sub = get(session, email)
        set_attributes(sub, values)
        now_set = dict(sub.attributes or {})
    shown = ", ".join(f"{k}={now_set.get(k, '')}" for k in values)
    click.echo(f"{sub.email}: {shown}")


@command(subscribers, "export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.pass_context
def subscribers_export(ctx: click.Context, file: Path | None) -> None:
    """Export every subscriber as CSV (to FILE, or standard output).

    \b
    Example:
      nurture subscribers export everyone.csv
    """
    settings = _settings(ctx)
    names = sorted(fields_for(settings.workspace).types)
    out = file.open("w", newline="", encoding="utf-8") if file else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(["email", "first_name", "timezone", "tags", "status", "created_at",
                         "confirmed_at", *names])  # fmt: skip
        with session_scope(settings) as session:
            count = 0
            for s in session.scalars(select(Subscriber).order_by(Subscriber.id)
                                     .execution_options(yield_per=1000)):  # fmt: skip
                attrs = s.attributes or {}
                writer.writerow([s.email, s.first_name or "", s.timezone or "",
                                 " ".join(tags_of(session, s.id)), s.status,
                                 s.created_at.isoformat(),
                                 s.confirmed_at.isoformat() if s.confirmed_at else "",
                                 *(attrs.get(n, "") for n in names)])  # fmt: skip
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
    settings = _settings(ctx)
    catalog = catalog_for(settings.sequences_dir)
    parsed = read_rows(file, fields_for(settings.workspace))
    consent = ConsentInfo(source="import", form=file.name, wording=None)
    with click.progressbar(length=len(parsed.rows), label="Importing", file=sys.stderr) as bar:
        outcome = import_rows(lambda: session_scope(settings), catalog, parsed.rows, clock.now(),
                              confirmed=confirmed, consent=consent, file=file.name,
                              progress=bar.update)  # fmt: skip
    problems = sorted(parsed.problems + outcome.problems, key=_line_of)
    for problem in problems:
        click.echo(problem, err=True)
    dispatch(settings, outcome.confirmations)
    click.echo(f"Imported {outcome.added} new, {outcome.existing + parsed.repeats} already known, "
               f"{len(problems)} bad rows.")  # fmt: skip


def _line_of(problem: str) -> int:
    """`file.csv:12: why` sorts by its line number."""
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


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
    with session_scope(_settings(ctx)) as session:
        forget(session, get(session, email), clock.now())
    click.echo(f"Forgot {email}; the address is suppressed and will never be mailed again.")


@command(cli, "unsubscribe")
@click.argument("email")
@click.option("--sequence", help="Only leave this sequence.")
@click.pass_context
def unsubscribe_cmd(ctx: click.Context, email: str, sequence: str | None) -> None:
    """Unsubscribe at once: nothing more is sent, even what is already queued.

    \b
    Example:
      nurture unsubscribe ana@example.com
    """
    with session_scope(_settings(ctx)) as session:
        unsubscribe(session, get(session, email), clock.now(), sequence=sequence,
                    consent=ConsentInfo(source="cli", wording=None))  # fmt: skip
    click.echo(f"Unsubscribed {email}{' from ' + sequence if sequence else ''}.")
