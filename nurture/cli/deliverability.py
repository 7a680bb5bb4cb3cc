"""Commands about what mailbox providers check: `dkim keygen` and `doctor`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nurture.cli import cli, command, settings_of
from nurture.errors import NurtureError

#: The selector `dkim keygen` uses when none is given or set.
DEFAULT_SELECTOR = "nurture"


@cli.group("dkim")
def dkim_group() -> None:
    """DKIM signing: make the key whose public half goes in DNS."""


@command(dkim_group, "keygen")
@click.option(
    "--selector", help=f"DKIM selector (default: NURTURE_DKIM_SELECTOR or {DEFAULT_SELECTOR})."
)
@click.option(
    "--domain", help="Signing domain, d= (default: NURTURE_DKIM_DOMAIN or the From domain)."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (default: dkim-SELECTOR.pem here).")  # fmt: skip
@click.pass_context
def keygen(ctx: click.Context, selector: str | None, domain: str | None, out: Path | None) -> None:
    """Write a new 2048-bit RSA key (readable by you only) and print the DNS record to publish.

    \b
    Example:
      $ nurture dkim keygen --selector mail --domain crumb.example
      mail._domainkey.crumb.example. IN TXT ( "v=DKIM1; k=rsa; p=MIIBIj…" "…" )
    """
    from nurture.delivery.dkim import committable_in_git
    from nurture.delivery.dkim import keygen as make_key
    from nurture.sender import sender_domain

    if not (selector and domain):
        settings = settings_of(ctx)
        selector = selector or settings.dkim_selector or DEFAULT_SELECTOR
        domain = domain or settings.dkim_domain or sender_domain(settings.sender or "")
        if not domain:
            raise NurtureError("no domain to sign for: give --domain or set NURTURE_FROM")
    key = make_key(out or Path(f"dkim-{selector}.pem"), selector, domain)
    click.echo(f"Wrote {key.path} (mode 0600). Publish this TXT record:\n")
    click.echo(key.record)
    click.echo(f"\nThen set NURTURE_DKIM_SELECTOR={key.selector} NURTURE_DKIM_DOMAIN={key.domain} "
               f"NURTURE_DKIM_KEY={key.path.resolve()}")  # fmt: skip
    if committable_in_git(key.path):
        click.echo(f"\nWarning: {key.path} is inside a git work tree and not ignored; add it to "
                   ".gitignore (as `nurture init` does with dkim-*.pem) so the private key is "
                   "never committed.", err=True)  # fmt: skip


@command(cli, "doctor")
@click.option(
    "--send-to", metavar="ADDR", help="Also send a test email there and verify its DKIM signature."
)
@click.pass_context
def doctor(ctx: click.Context, send_to: str | None) -> None:
    """Check what mailbox providers check: SPF, DKIM, DMARC, one-click unsubscribe, the emails, complaint rates.

    Prints each check as pass, warn or fail with its fix; exits 1 when any fails. The
    last says how bounces come back: the VERP address, the IMAP mailbox, and which
    provider webhooks (/webhooks/ses, postmark, mailgun, sendgrid) are set up.

    \b
    Example:
      $ nurture doctor --send-to me@crumb.example
      pass  SPF: crumb.example: v=spf1 include:_spf.provider.example ~all
      fail  DKIM: no DKIM record at mail._domainkey.crumb.example
            fix: publish at mail._domainkey.crumb.example the TXT record …
    """
    from nurture.doctor.checkup import run_doctor

    checks = run_doctor(settings_of(ctx), send_to)
    for check in checks:
        click.echo(f"{check.level.value:<5} {check.name}: {check.detail}")
        if check.fix:
            click.echo(f"      fix: {check.fix}")
    failed = sum(c.level == "fail" for c in checks)
    warned = sum(c.level == "warn" for c in checks)
    click.echo(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    if failed:
        sys.exit(1)
