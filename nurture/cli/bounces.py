"""Commands about deliverability after the send: bounces receive/fetch, suppression."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import click

from nurture.cli import cli, command, database_error, settings_of
from nurture.delivery.bounces.handling import Tally, handle_message
from nurture.delivery.bounces.mailbox import fetch_imap, fetch_maildir
from nurture.delivery.bounces.reading import UnreadableMessage
from nurture.errors import NurtureError
from nurture.people.suppression import (
    add_suppressed,
    export_lines,
    import_suppressed,
    list_suppressed,
    remove_suppressed,
)

#: sysexits.h, what an MTA's pipe transport reads: retry later, or bounce it back.
EX_DATAERR = 65
EX_TEMPFAIL = 75


@cli.group("bounces")
def bounces() -> None:
    """Bounces and complaints that arrive after the send: by pipe, mailbox or webhook."""


@bounces.command("receive")
@click.pass_context
def bounces_receive(ctx: click.Context) -> None:
    """Handle one bounce or complaint message read on stdin (an MTA pipe transport).

    Exits 0 when the message was handled, matched or not; 75 (EX_TEMPFAIL) when the
    database cannot be reached or a setting is wrong, so the MTA keeps the message and
    tries again; 65 (EX_DATAERR) when the input is not an email message at all.

    \b
    Example (Postfix master.cf):
      nurture unix - n n - - pipe
        flags=Rq user=nurture argv=/usr/local/bin/nurture -w /srv/crumb bounces receive
    """
    raw = sys.stdin.buffer.read()
    try:
        handled = handle_message(settings_of(ctx), raw)
    except UnreadableMessage as e:
        click.echo(f"Error: {e}", err=True)
        ctx.exit(EX_DATAERR)
    except NurtureError as e:
        click.echo(f"Error: {e}", err=True)
        ctx.exit(EX_TEMPFAIL)
    except Exception as e:
        if not database_error(e):
            raise
        click.echo("Error: the database cannot be reached; the MTA should retry", err=True)
        ctx.exit(EX_TEMPFAIL)
    where = f" (delivery {handled.delivery_id})" if handled.delivery_id else ""
    click.echo(f"{handled.outcome}{where}{'; address suppressed' if handled.suppressed else ''}")


@command(bounces, "fetch")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path),
              help="Read this local Maildir instead of NURTURE_BOUNCE_IMAP_URL.")  # fmt: skip
@click.pass_context
def bounces_fetch(ctx: click.Context, maildir: Path | None) -> None:
    """Handle the new messages of the bounce mailbox; safe from cron on several hosts.

    IMAP (NURTURE_BOUNCE_IMAP_URL): unseen messages are handled, flagged \\Seen and
    moved to a `Processed` folder if there is one. Maildir: each message is moved from
    new/ to cur/ with the S flag as it is taken.

    \b
    Example:
      nurture bounces fetch
      nurture bounces fetch --maildir /var/mail/bounces
    """
    settings = settings_of(ctx)
    fetched: Tally = fetch_maildir(settings, maildir) if maildir else fetch_imap(settings)
    if not fetched.outcomes:
        click.echo("No new messages.")
        return
    click.echo(str(fetched))


@cli.group("suppression")
def suppression() -> None:
    """The suppression list: addresses never mailed again (kept hashed)."""


@command(suppression, "list")
@click.pass_context
def suppression_list(ctx: click.Context) -> None:
    """Every suppressed address's hash, reason and date (addresses are not kept).

    \b
    Example:
      nurture suppression list
    """
    entries = list_suppressed(settings_of(ctx))
    for e in entries:
        click.echo(f"{e.at:%Y-%m-%d %H:%M}  {e.email_hash[:16]}…  {e.reason}")
    click.echo(f"{len(entries)} suppressed address{'es' if len(entries) != 1 else ''}.")


@command(suppression, "add")
@click.argument("email")
@click.option("--reason", default="added by hand", show_default=True, help="Why.")
@click.pass_context
def suppression_add(ctx: click.Context, email: str, reason: str) -> None:
    """Never mail EMAIL again; what is queued for it is cancelled.

    \b
    Example:
      nurture suppression add ana@example.com --reason "asked by phone"
    """
    added = add_suppressed(settings_of(ctx), email, reason)
    click.echo(f"{email} {'is now' if added else 'was already'} suppressed.")


@command(suppression, "remove")
@click.argument("email")
@click.option("--reason", required=True, help="Why it may be mailed again (logged).")
@click.option("--by", default=None, help="Who removes it (logged; default: $USER).")
@click.pass_context
def suppression_remove(ctx: click.Context, email: str, reason: str, by: str | None) -> None:
    """Take EMAIL off the list; who and why are logged. It is not resubscribed.

    \b
    Example:
      nurture suppression remove ana@example.com --reason "mailbox fixed, she wrote in"
    """
    who = by or os.environ.get("USER") or getpass.getuser()
    remove_suppressed(settings_of(ctx), email, reason, who)
    click.echo(f"{email} removed from the suppression list (by {who}).")


@command(suppression, "import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reason", default="imported", show_default=True, help="Why, for each.")
@click.pass_context
def suppression_import(ctx: click.Context, file: Path, reason: str) -> None:
    """Suppress every address in FILE: one per line, or a CSV with an email column
    (the export of the service being replaced, or of `suppression export`).

    \b
    Example:
      nurture suppression import mailchimp-cleaned.csv --reason "from Mailchimp"
    """
    added, bad = import_suppressed(settings_of(ctx), file, reason)
    click.echo(f"{added} address{'es' if added != 1 else ''} newly suppressed.")
    for value in bad[:20]:
        click.echo(f"not an address, skipped: {value}", err=True)
    if bad:
        raise click.ClickException(f"{len(bad)} line(s) of {file} are not addresses")


@command(suppression, "export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.pass_context
def suppression_export(ctx: click.Context, file: Path | None) -> None:
    """Write the list as CSV (hash, reason, date) to FILE or stdout, for `import`.

    \b
    Example:
      nurture suppression export suppressed.csv
    """
    lines = export_lines(list_suppressed(settings_of(ctx)))
    if file is None:
        for line in lines:
            click.echo(line, nl=False)
        return
    with file.open("w", encoding="utf-8") as f:
        f.writelines(lines)
